"""Old path of the hub's HTTP polling listener: see :mod:`hivemind_core.listeners.http`."""

from hivemind_core.listeners.http import HTTPListener, start_http_listener

__all__ = ["HTTPListener", "start_http_listener"]
