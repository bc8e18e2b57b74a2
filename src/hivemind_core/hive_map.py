"""Public path kept for compatibility: the hive map lives in
:mod:`hivemind_bus_client.protocol.hive_map` (moved there 2026-12; this path
stays), since mapping a hive is the originator's job, client or hub.

The name is an alias of that module, so everything it defines is the same
object under both names.
"""

import sys

from hivemind_bus_client.protocol import hive_map
from hivemind_bus_client.protocol.hive_map import *  # noqa: F403  (the public names, for type checkers)

sys.modules[__name__] = hive_map
