"""The one place where transport failures become the exception hierarchy.

:func:`map_errors` is a context manager (the ``map_exceptions`` idiom of
httpcore): the code inside it talks to sockets, TLS, websockets, HTTP or an MQTT
broker, and whatever those raise leaves it as one of ours:

=============================================  =================================
what happened                                  raised
=============================================  =================================
TCP refused / name does not resolve            ``HiveMindEntryPointNotFound``
other socket error while connecting            ``HiveMindEntryPointNotFound``
socket error on an open link                   ``HiveMindConnectionError``
TLS failure                                    ``SecureConnectionFailed``
HTTP 401/403 (websocket upgrade or HTTP call)  ``UnauthorizedKeyError``
other HTTP status, not a HiveMind endpoint     ``HiveMindConnectionError``
a timeout                                      ``ConnectTimeout``
websocket closed                               ``ChannelClosed``
MQTT broker unreachable (while connecting)     ``HiveMindEntryPointNotFound``
MQTT broker lost on an open link               ``HiveMindConnectionError``
MQTT broker refused our login                  ``ConfigurationError``
=============================================  =================================

:func:`close_error` turns the end of a link (a :class:`ChannelClosed`) into the
error the user sees; during the handshake:

=============================================  =================================
how the link ended                             raised
=============================================  =================================
our connection failed (its own error)          that error (e.g. ``NegotiationFailed``,
                                               ``AuthenticationFailed``, ``ConnectTimeout``)
hub says "come back later" (1001, 1011-1013,   ``ConnectionClosedError`` (retryable)
1006, 4003)
closed before the hub said anything           ``UnauthorizedKeyError`` (the reference hub
                                               closes silently on an unknown key)
the hub's reason names a negotiation failure   ``NegotiationFailed``
password handshake, or 1008                    ``AuthenticationFailed``
anything else                                  ``HandshakeError``
=============================================  =================================

After the handshake a close is ``ConnectionClosedOK`` (1000, 1001) or
``ConnectionClosedError``.
"""

from __future__ import annotations

import asyncio
import http.client
import socket
import ssl
from collections.abc import Iterator
from contextlib import contextmanager

from websockets.exceptions import ConnectionClosed as WsConnectionClosed
from websockets.exceptions import InvalidHandshake, InvalidStatus, InvalidURI

from hivemind_bus_client.exceptions import (
    AuthenticationFailed,
    CloseCode,
    ConfigurationError,
    ConnectionClosedError,
    ConnectionClosedOK,
    ConnectTimeout,
    HandshakeError,
    HiveMindConnectionError,
    HiveMindEntryPointNotFound,
    HiveMindError,
    NegotiationFailed,
    SecureConnectionFailed,
    UnauthorizedKeyError,
)
from hivemind_bus_client.transport.channel import ChannelClosed

__all__ = [
    "NEGOTIATION_REASONS",
    "close_error",
    "closed_from_websocket",
    "http_status_error",
    "is_negotiation_reason",
    "map_errors",
]

#: Beginnings of the close reasons a hub (ours) gives when no cipher, encoding,
#: version or handshake mode fits: the wire has one close code (1008) for every
#: handshake refusal, so the reason is what tells negotiation from credentials.
NEGOTIATION_REASONS = (
    "no common ",
    "no handshake possible",
    "hub offers no usable",
    "hub chose something",
    "this hub has no rsa key",
    "unusable client public key",
    "handshake has neither",
    "handshake payload must",
)

#: Close codes that say "come back later" during a handshake (never a refusal).
_RETRY_DURING_HANDSHAKE = frozenset(
    {
        CloseCode.GOING_AWAY,
        CloseCode.ABNORMAL,
        CloseCode.INTERNAL,
        CloseCode.RESTART,
        CloseCode.TRY_AGAIN,
        CloseCode.PERMISSION,
    }
)


def closed_from_websocket(exc: WsConnectionClosed) -> ChannelClosed:
    """The :class:`ChannelClosed` for a ``websockets`` close (the initiator's code)."""
    rcvd, sent = exc.rcvd, exc.sent
    if rcvd is None and sent is None:
        return ChannelClosed(CloseCode.ABNORMAL, "", by_peer=True)
    by_peer = sent is None or (rcvd is not None and bool(exc.rcvd_then_sent))
    frame = rcvd if by_peer else sent
    assert frame is not None
    return ChannelClosed(frame.code, frame.reason, by_peer=by_peer)


def http_status_error(status: int, where: str, detail: str = "") -> HiveMindError:
    """The error for an HTTP refusal (an upgrade or an HTTP-polling call)."""
    extra = f": {detail}" if detail else ""
    if status in (401, 403):
        return UnauthorizedKeyError(f"hub at {where} refused the access key (HTTP {status}){extra}")
    return HiveMindConnectionError(f"hub at {where} answered HTTP {status}{extra}")


@contextmanager
def map_errors(
    where: str, *, connecting: bool = True, timeout: float | None = None
) -> Iterator[None]:
    """Translate what the block raises into the hierarchy (see the module docstring).

    Args:
        where: ``host:port`` (or a broker name) for the messages.
        connecting: True while the link is being opened: a socket error then
            means "nothing to reach there" rather than "the link dropped".
        timeout: the limit that applied, for the message of ``ConnectTimeout``.
    """
    try:
        yield
    except HiveMindError:
        raise
    except (asyncio.TimeoutError, TimeoutError):
        within = f" within {timeout:g} s" if timeout is not None else " in time"
        raise ConnectTimeout(f"no answer from {where}{within}") from None
    except InvalidStatus as exc:
        raise http_status_error(exc.response.status_code, where) from None
    except (InvalidHandshake, InvalidURI) as exc:
        raise HiveMindConnectionError(f"{where} is not a HiveMind websocket: {exc}") from None
    except WsConnectionClosed as exc:
        raise closed_from_websocket(exc) from None
    except ssl.SSLError as exc:
        raise SecureConnectionFailed(
            f"TLS with {where} failed: {getattr(exc, 'reason', None) or exc}"
        ) from None
    except socket.gaierror as exc:
        raise HiveMindEntryPointNotFound(f"cannot resolve {where!r}: {exc.strerror}") from None
    except ConnectionRefusedError:
        raise HiveMindEntryPointNotFound(
            f"no hub listening at {where} (connection refused)"
        ) from None
    except http.client.HTTPException as exc:
        raise HiveMindConnectionError(f"HTTP exchange with {where} failed: {exc!r}") from None
    except OSError as exc:
        text = exc.strerror or str(exc) or type(exc).__name__
        if connecting:
            raise HiveMindEntryPointNotFound(f"cannot reach {where}: {text}") from None
        raise HiveMindConnectionError(f"link to {where} failed: {text}") from None
    except Exception as exc:
        mapped = _mqtt_error(exc, where, connecting)
        if mapped is None:
            raise
        raise mapped from None


#: MQTT CONNACK codes (v3 and v5) that mean "bad broker login".
_MQTT_LOGIN_REFUSED = frozenset({4, 5, 134, 135})


def _mqtt_error(exc: BaseException, where: str, connecting: bool) -> HiveMindError | None:
    """The hierarchy's error for an aiomqtt failure, or None when ``exc`` is not one."""
    try:
        from aiomqtt import MqttCodeError, MqttError
    except ImportError:  # the mqtt extra is not installed: nothing can raise it
        return None
    if not isinstance(exc, MqttError):
        return None
    if isinstance(exc.__cause__, ssl.SSLError):
        return SecureConnectionFailed(f"TLS with {where} failed: {exc}")
    if isinstance(exc, MqttCodeError) and exc.rc in _MQTT_LOGIN_REFUSED:
        return ConfigurationError(f"{where} refused our broker login: {exc}")
    if connecting:
        return HiveMindEntryPointNotFound(f"cannot reach {where}: {exc}")
    return HiveMindConnectionError(f"{where}: {exc}")


def is_negotiation_reason(reason: str) -> bool:
    """True when a hub's close reason says no cipher, encoding or mode fits."""
    text = reason.strip().lower()
    return text.startswith(NEGOTIATION_REASONS)


def close_error(
    closed: ChannelClosed,
    where: str,
    *,
    handshaking: bool,
    mode: str | None = None,
) -> HiveMindError:
    """The user-facing error for a link that ended (see the module docstring).

    Args:
        closed: how it ended (from the driver or the channel).
        where: ``host:port`` for the message.
        handshaking: whether the handshake had not completed.
        mode: the handshake mode under way (``password``, ``rsa``...), if known.
    """
    if isinstance(closed.error, HiveMindError):
        return closed.error
    code, reason = closed.code, closed.reason
    why = f" ({reason})" if reason else ""
    if not handshaking:
        if code in (CloseCode.NORMAL, CloseCode.GOING_AWAY):
            return ConnectionClosedOK(code, reason)
        return ConnectionClosedError(code, reason)
    if code in _RETRY_DURING_HANDSHAKE:
        return ConnectionClosedError(code, f"hub at {where} closed during the handshake{why}")
    if not closed.greeted:
        return UnauthorizedKeyError(
            f"hub at {where} closed the link before greeting us (code {code}){why}: "
            "the access key was refused"
        )
    if is_negotiation_reason(reason):
        return NegotiationFailed(f"hub at {where} found no common ground (code {code}){why}")
    if mode == "password" or code == CloseCode.POLICY:
        return AuthenticationFailed(
            f"hub at {where} closed the link during the {mode or ''} handshake "
            f"(code {code}){why}: credentials or offer refused"
        )
    return HandshakeError(f"hub at {where} closed the link during the handshake (code {code}){why}")
