"""Public path kept for compatibility: the reconnect policy lives in
:mod:`hivemind_bus_client.protocol.reconnect` (moved there 2026-12; this path stays).

The name is an alias of that module, so everything it defines (and anything a
program patches on it) is the same object under both names.
"""

import sys

from hivemind_bus_client.protocol import reconnect
from hivemind_bus_client.protocol.reconnect import *  # noqa: F403  (the public names, for type checkers)

sys.modules[__name__] = reconnect
