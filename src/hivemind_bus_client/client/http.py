"""HiveMind over HTTP polling: :class:`HiveMindHTTPClient` (docs/client.md, "HTTP and MQTT clients").

The sync client with an :class:`~hivemind_bus_client.transport.http.HTTPPollChannel`
under its engine (that module describes the wire), so handlers, ``emit``,
``wait_for_*``, the handshake (and its timeout), the error mapping and
reconnects behave as over a websocket.

Differences from the reference, on purpose (docs/client.md, "Compared with the reference client"):

* the ``authorization`` value is percent-encoded;
* binary frames (only BINARY messages: binarize is always off over HTTP) are
  posted as field ``b64_message``;
* errors are the exception hierarchy, not ``RuntimeError``.
"""

from __future__ import annotations

from typing import Any

from hivemind_bus_client.client.config import has_port
from hivemind_bus_client.client.engine import ChannelFactory
from hivemind_bus_client.client.node import ClientNode
from hivemind_bus_client.client.shaping import BinaryDataCallbacks
from hivemind_bus_client.client.sync import HiveMessageBusClient
from hivemind_bus_client.identity import NodeIdentity
from hivemind_bus_client.transport.channel import Channel
from hivemind_bus_client.transport.http import HTTPPollChannel

__all__ = ["DEFAULT_HTTP_PORT", "DEFAULT_HTTP_USERAGENT", "HiveMindHTTPClient"]

#: Port of the hub's http listener (the reference server.json's).
DEFAULT_HTTP_PORT = 5679
#: The reference HTTP client's user agent.
DEFAULT_HTTP_USERAGENT = "HiveMindHTTPClientV1.0"


class HiveMindHTTPClient(HiveMessageBusClient):
    """A HiveMind satellite over HTTP polling (same API as :class:`HiveMessageBusClient`).

    Args:
        key, password, crypto_key, site_id, session_id, identity, internal_bus,
            bin_callbacks, share_bus, compress, self_signed: as the websocket client;
            key and password come from the identity file when not given.
        host: hub address; ``http://``/``https://`` (or ``ws://``/``wss://``,
            mapped to them). Default: the identity file's ``default_master``.
        port: the hub's http listener port; default: a port written in ``host``,
            else 5679 (not the identity file's port, which is the websocket one).
        useragent: default ``HiveMindHTTPClientV1.0``.
        binarize: accepted for compatibility and ignored: frames are text over
            HTTP (the reference's form decoding breaks binary frames).
        poll_interval: seconds between idle polls (default 1, as the reference).
        min_poll_interval: re-poll delay right after traffic (doubles up to
            ``poll_interval``).
        request_timeout: seconds one HTTP call may take.

    Other keyword-only limits as :class:`HiveMessageBusClient` (``ping_*`` unused).

    Raises:
        ConfigurationError: no access key or no host from either source.
    """

    def __init__(
        self,
        key: str | None = None,
        password: str | None = None,
        crypto_key: str | None = None,
        host: str | None = None,
        port: int | None = None,
        useragent: str = DEFAULT_HTTP_USERAGENT,
        self_signed: bool = True,
        share_bus: bool = False,
        compress: bool = True,
        binarize: bool = False,
        identity: NodeIdentity | None = None,
        internal_bus: Any = None,
        bin_callbacks: BinaryDataCallbacks | None = None,
        site_id: str | None = None,
        session_id: str | None = None,
        *,
        poll_interval: float = 1.0,
        min_poll_interval: float = 0.05,
        request_timeout: float = 10.0,
        **limits: Any,
    ) -> None:
        del binarize
        ident = identity if identity is not None else NodeIdentity()
        if port is None and not has_port(host or ident.default_master or ""):
            port = DEFAULT_HTTP_PORT
        self._poll = (poll_interval, min_poll_interval, request_timeout)
        if poll_interval <= 0 or min_poll_interval <= 0:
            raise ValueError("poll intervals must be positive")
        super().__init__(
            key,
            password,
            crypto_key,
            host,
            port,
            useragent or DEFAULT_HTTP_USERAGENT,
            self_signed,
            share_bus,
            compress,
            False,
            ident,
            internal_bus,
            bin_callbacks,
            site_id,
            session_id,
            **limits,
        )
        self.config.binarize = False

    def _make_node(self, channel_factory: ChannelFactory | None = None) -> ClientNode:
        return super()._make_node(channel_factory or self._open_channel)

    async def _open_channel(self) -> Channel:
        cfg = self.config
        self.config.binarize = False  # frames are text over HTTP
        channel = HTTPPollChannel(
            cfg.host,
            cfg.port,
            cfg.key,
            cfg.useragent,
            secure=cfg.secure,
            self_signed=cfg.self_signed,
            poll_interval=self._poll[0],
            min_poll_interval=self._poll[1],
            request_timeout=self._poll[2],
        )
        try:
            await channel.open()
        except BaseException:
            await channel.close()
            raise
        return channel

    @property
    def base_url(self) -> str:
        """``http(s)://host:port`` of the hub's http listener."""
        scheme = "https" if self.config.secure else "http"
        host = self.config.host
        if ":" in host:
            host = f"[{host}]"
        return f"{scheme}://{host}:{self.config.port}"
