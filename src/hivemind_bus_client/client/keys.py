"""What each link attempt is made of: our keys and session, the client Connection
built from them, and the default channel (a websocket to the hub)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from hivemind_bus_client.client.config import ClientConfig
from hivemind_bus_client.identity import NodeIdentity
from hivemind_bus_client.protocol import crypto
from hivemind_bus_client.protocol.connection import Connection, Role
from hivemind_bus_client.protocol.v3settings import V3Settings
from hivemind_bus_client.transport import websocket
from hivemind_bus_client.transport.channel import Channel
from hivemind_bus_client.transport.tls import client_context

__all__ = ["ChannelFactory", "LinkKeys", "build_session", "websocket_factory"]

LOG = logging.getLogger(__name__)

#: Opens one channel to the hub (raising the hierarchy when it cannot).
ChannelFactory = Callable[[], Awaitable[Channel]]


def build_session(session_id: str, site_id: str) -> dict[str, Any]:
    """The OVOS session dict sent in our HELLO (a real id, never ``default``)."""
    try:
        from ovos_bus_client.session import Session

        data = Session(session_id=session_id).serialize()
    except Exception:  # ovos config unreadable: the two keys a hub needs
        LOG.debug("could not build a full OVOS session", exc_info=True)
        data = {"session_id": session_id}
    data["session_id"] = session_id
    data["site_id"] = site_id
    return data


class LinkKeys:
    """The RSA key, public key and OVOS session of one client, loaded once.

    Args:
        config: merged client settings (password, offers, limits).
        identity: the node identity (its RSA key and public key).
    """

    def __init__(self, config: ClientConfig, identity: NodeIdentity) -> None:
        self.config = config
        self.identity = identity
        self._private_key: crypto.PrivateKey | None = None
        self._key_loaded = False
        self._session: dict[str, Any] | None = None

    @property
    def private_key(self) -> crypto.PrivateKey | None:
        """Our RSA key: the identity's, or a throwaway one when RSA mode needs it."""
        if not self._key_loaded:
            self._key_loaded = True
            self._private_key = self.identity.load_private_key()
            if self._private_key is None and not self.config.password:
                # No password: the RSA handshake is the only way in. A per-process
                # key is as good as any for link encryption.
                LOG.info("no RSA key in the identity; using a throwaway key for this process")
                self._private_key = crypto.create_private_key()
        return self._private_key

    @property
    def public_key_pem(self) -> str | None:
        """PEM of our public key, as HELLO and INTERCOM senders use it."""
        if self.identity.public_key:
            return self.identity.public_key
        key = self.private_key
        return crypto.public_key_pem(key) if key is not None else None

    def session_dict(self) -> dict[str, Any]:
        """Our OVOS session (built once; its id survives reconnects)."""
        if self._session is None:
            self._session = build_session(self.config.session_id, self.config.site_id)
        self._session["site_id"] = self.config.site_id
        return self._session

    def new_connection(self, v3: V3Settings | None = None) -> Connection:
        """A fresh client Connection with our settings (one per link attempt).

        ``v3``: the protocol v3 settings of this attempt (``None``: v1 only); the
        hub's offer decides whether the link runs v3.
        """
        cfg = self.config
        hello = {
            "pubkey": self.identity.public_key,
            "session": self.session_dict(),
            "site_id": cfg.site_id,
        }
        return Connection(
            Role.CLIENT,
            password=cfg.password,
            crypto_key=cfg.crypto_key,
            private_key=self.private_key,
            encodings=cfg.encodings,
            ciphers=cfg.ciphers,
            binarize=cfg.binarize,
            compress=cfg.compress,
            hello=hello,
            handshake_timeout=cfg.handshake_timeout,
            max_size=cfg.max_size,
            max_inflated=cfg.max_inflated,
            v3=v3,
        )


def websocket_factory(config: ClientConfig) -> ChannelFactory:
    """The default channel: a websocket to ``config.url``.

    Its opening (TCP, TLS, HTTP upgrade) is bounded by
    ``websocket_connect_timeout``, within the ``connect_timeout`` of the whole connect.
    """

    async def open_channel() -> Channel:
        return await websocket.connect(
            config.url,
            ssl_context=client_context(config.secure, config.self_signed),
            open_timeout=min(config.websocket_connect_timeout, config.connect_timeout),
            max_size=config.max_size,
            ping_interval=config.ping_interval,
            ping_timeout=config.ping_timeout,
            user_agent=config.useragent,
            where=config.where,
        )

    return open_channel
