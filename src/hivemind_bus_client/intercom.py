"""Public path kept for compatibility: INTERCOM sealing and opening lives in
:mod:`hivemind_bus_client.protocol.intercom` (moved there 2026-12; this path stays).

The name is an alias of that module, so everything it defines (and anything a
program patches on it) is the same object under both names.
"""

import sys

from hivemind_bus_client.protocol import intercom
from hivemind_bus_client.protocol.intercom import *  # noqa: F403  (the public names, for type checkers)

sys.modules[__name__] = intercom
