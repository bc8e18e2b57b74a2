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

from hivemind_bus_client.client.channelled import ChannelledClient, client_arguments
from hivemind_bus_client.transport.http import HTTPPollChannel

__all__ = ["DEFAULT_HTTP_PORT", "DEFAULT_HTTP_USERAGENT", "HiveMindHTTPClient"]

#: Port of the hub's http listener (the reference server.json's).
DEFAULT_HTTP_PORT = 5679
#: The reference HTTP client's user agent.
DEFAULT_HTTP_USERAGENT = "HiveMindHTTPClientV1.0"


class HiveMindHTTPClient(ChannelledClient):
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
        *args: Any,
        poll_interval: float = 1.0,
        min_poll_interval: float = 0.05,
        request_timeout: float = 10.0,
        **kwargs: Any,
    ) -> None:
        call, _ = client_arguments(
            args,
            kwargs,
            default_port=DEFAULT_HTTP_PORT,
            default_useragent=DEFAULT_HTTP_USERAGENT,
        )
        call["binarize"] = False
        self._poll = (poll_interval, min_poll_interval, request_timeout)
        if poll_interval <= 0 or min_poll_interval <= 0:
            raise ValueError("poll intervals must be positive")
        super().__init__(**call)
        self.config.binarize = False

    def _new_channel(self) -> HTTPPollChannel:
        cfg = self.config
        self.config.binarize = False  # frames are text over HTTP
        previous = getattr(self, "_http_channel", None)
        channel = self._http_channel = HTTPPollChannel(
            cfg.host,
            cfg.port,
            cfg.key,
            cfg.useragent,
            secure=cfg.secure,
            self_signed=cfg.self_signed,
            poll_interval=self._poll[0],
            min_poll_interval=self._poll[1],
            request_timeout=self._poll[2],
            # A link the hub still holds bound to us can only be replaced with its secret.
            link_secret=previous.link_secret if previous is not None else None,
        )
        return channel

    @property
    def base_url(self) -> str:
        """``http(s)://host:port`` of the hub's http listener."""
        scheme = "https" if self.config.secure else "http"
        host = self.config.host
        if ":" in host:
            host = f"[{host}]"
        return f"{scheme}://{host}:{self.config.port}"
