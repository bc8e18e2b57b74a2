"""The one TLS context every client end uses (websocket, HTTP polling, MQTT, upstream)."""

from __future__ import annotations

import ssl

__all__ = ["client_context"]


def client_context(secure: bool, self_signed: bool) -> ssl.SSLContext | None:
    """TLS settings for a client end: ``None`` when the link is not encrypted.

    ``self_signed`` accepts a certificate no authority signed (hubs usually
    make their own); the link is still encrypted, and the HiveMind handshake
    authenticates the hub.
    """
    if not secure:
        return None
    ctx = ssl.create_default_context()
    if self_signed:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx
