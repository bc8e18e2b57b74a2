"""Public path kept for compatibility until the hub stops importing it: the client's
link engine lives in :mod:`hivemind_bus_client.client.engine`, the TLS context in
:mod:`hivemind_bus_client.transport.tls` (moved there 2026-12).
"""

from hivemind_bus_client.client.engine import LinkEngine, build_session
from hivemind_bus_client.transport.tls import client_context

#: The old name of :func:`hivemind_bus_client.transport.tls.client_context`.
client_ssl_context = client_context

__all__ = ["LinkEngine", "build_session", "client_ssl_context"]
