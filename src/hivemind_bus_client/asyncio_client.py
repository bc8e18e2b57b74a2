"""Public path kept for compatibility: the asyncio client lives in
:mod:`hivemind_bus_client.client.asyncio` (moved there 2026-12; this path stays).

The name is an alias of that module, so everything it defines (and anything a
program patches on it) is the same object under both names.
"""

import sys

from hivemind_bus_client.client import asyncio as _face
from hivemind_bus_client.client.asyncio import *  # noqa: F403  (the public names, for type checkers)

sys.modules[__name__] = _face
