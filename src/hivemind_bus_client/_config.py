"""Public path kept for compatibility: the client settings live in
:mod:`hivemind_bus_client.client.config` (moved there 2026-12; this path stays).

The name is an alias of that module, so everything it defines (and anything a
program patches on it) is the same object under both names.
"""

import sys

from hivemind_bus_client.client import config
from hivemind_bus_client.client.config import *  # noqa: F403  (the public names, for type checkers)

sys.modules[__name__] = config
