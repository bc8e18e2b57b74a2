"""Public path kept for compatibility: the sans-I/O link state machine lives in
:mod:`hivemind_bus_client.protocol.connection` (moved there 2026-12; this path stays).

The name is an alias of that module, so everything it defines (and anything a
program patches on it) is the same object under both names.
"""

import sys

from hivemind_bus_client.protocol import connection
from hivemind_bus_client.protocol.connection import *  # noqa: F403  (the public names, for type checkers)

sys.modules[__name__] = connection
