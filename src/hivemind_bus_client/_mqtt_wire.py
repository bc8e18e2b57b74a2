"""Public path kept for compatibility: the MQTT wire (topics, payloads, notices) lives in
:mod:`hivemind_bus_client.transport.mqtt` (moved there 2026-12; this path stays).

The name is an alias of that module, so everything it defines (and anything a
program patches on it) is the same object under both names.
"""

import sys

from hivemind_bus_client.transport.mqtt import require_aiomqtt

require_aiomqtt()  # a clear ImportError without the mqtt extra, even when cached

from hivemind_bus_client.transport import mqtt  # noqa: E402
from hivemind_bus_client.transport.mqtt import *  # noqa: E402, F403  (the public names, for type checkers)

sys.modules[__name__] = mqtt
