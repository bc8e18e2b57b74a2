"""The one exception hierarchy of the HiveMind protocol core.

Every malformed, truncated, tampered or oversized input raises a subclass of
:class:`HiveMindError`; nothing else escapes the codecs, the cipher envelopes,
the handshakes or the connection state machine. Errors say whose fault they
are: a *remote* error (the peer sent something invalid) carries in
``close_code`` the websocket close code the link is closed with; a *local*
error (the API was misused, the client is misconfigured, a link failed) is
raised at once, is never sent anywhere, and has ``close_code = None``. The
codes below are each class's ``close_code``; a class without one inherits its
parent's.

::

    HiveMindError (HiveMindException)      (no close code)
    ├── ProtocolError                      peer broke the protocol (close 1002)
    │   ├── DecodingError (ValueError)     bytes/JSON/encoding could not be parsed
    │   │   ├── Z85DecodeError
    │   │   ├── InvalidMessage             parsed, but not a valid HiveMessage
    │   │   └── UnsupportedProtocolVersion
    │   └── PayloadTooBig                  over a size limit (close 1009)
    ├── InvalidEncoding (ValueError)       unknown text-encoding name (close 1002)
    ├── InvalidCipher (ValueError)         unknown cipher name (close 1002)
    ├── CryptoError                        (close 1008)
    │   ├── InvalidKeySize (ValueError)
    │   └── WrongEncryptionKey
    │       ├── DecryptionKeyError         authentication tag did not verify
    │       └── EncryptionKeyError
    ├── HandshakeError                     (close 1008)
    │   ├── AuthenticationFailed
    │   │   └── UnauthorizedKeyError       access key refused
    │   ├── HandshakeReplayed              password envelope used before
    │   ├── HandshakeThrottled             too many handshakes (1008 / 1013)
    │   ├── NegotiationFailed              no common cipher / encoding
    │   └── VersionRejected
    ├── PermissionDenied                   (close 4003)
    ├── InvalidState                       local API misuse (no close code)
    ├── ConfigurationError (RuntimeError)  missing key/host/password (no close code)
    └── HiveMindConnectionError (ConnectionError)   the link failed (no close code)
        ├── ConnectionClosed               ``code``: what the closing side said
        │   ├── ConnectionClosedOK
        │   └── ConnectionClosedError
        ├── ConnectTimeout (TimeoutError)  no completed handshake in time
        ├── SecureConnectionFailed
        └── HiveMindEntryPointNotFound

The names ``HiveMindException``, ``UnauthorizedKeyError``, ``WrongEncryptionKey``,
``DecryptionKeyError``, ``EncryptionKeyError``, ``Z85DecodeError``,
``SecureConnectionFailed`` and ``HiveMindEntryPointNotFound`` are the ones the
reference client exports, so code written against it keeps working.
"""

from __future__ import annotations

from enum import IntEnum

__all__ = [
    "AuthenticationFailed",
    "CloseCode",
    "ConfigurationError",
    "ConnectTimeout",
    "ConnectionClosed",
    "ConnectionClosedError",
    "ConnectionClosedOK",
    "CryptoError",
    "DecodingError",
    "DecryptionError",
    "DecryptionKeyError",
    "EncryptionKeyError",
    "HandshakeError",
    "HandshakeReplayed",
    "HandshakeThrottled",
    "HiveMindConnectionError",
    "HiveMindEntryPointNotFound",
    "HiveMindError",
    "HiveMindException",
    "InvalidCipher",
    "InvalidEncoding",
    "InvalidKeySize",
    "InvalidMessage",
    "InvalidState",
    "NegotiationFailed",
    "PayloadTooBig",
    "PermissionDenied",
    "ProtocolError",
    "SecureConnectionFailed",
    "UnauthorizedKeyError",
    "UnsupportedProtocolVersion",
    "VersionRejected",
    "WrongEncryptionKey",
    "Z85DecodeError",
]


class CloseCode(IntEnum):
    """The websocket close codes HiveMind links use: the only table of them.

    Every module that closes a link, or decides what a close means, names its
    code from here.
    """

    NORMAL = 1000  #: orderly close
    GOING_AWAY = 1001  #: the node is shutting down
    PROTOCOL_ERROR = 1002  #: malformed frame or message
    UNSUPPORTED_DATA = 1003  #: a frame of a kind the peer cannot take
    NO_STATUS = 1005  #: the close frame carried no code (never sent)
    ABNORMAL = 1006  #: the transport dropped without a close frame (never sent)
    INVALID_DATA = 1007  #: frame data inconsistent with its type
    POLICY = 1008  #: authentication, credentials or offer refused
    TOO_BIG = 1009  #: over a size limit
    MANDATORY_EXTENSION = 1010  #: the client needs an extension the server lacks
    INTERNAL = 1011  #: an error on the closing side
    RESTART = 1012  #: the service restarts
    TRY_AGAIN = 1013  #: overloaded (backlog full, too many links): come back later
    PERMISSION = 4003  #: a message type the link may not send


#: Aliases kept for code that imported the constants.
CLOSE_NORMAL = CloseCode.NORMAL
CLOSE_GOING_AWAY = CloseCode.GOING_AWAY
CLOSE_PROTOCOL_ERROR = CloseCode.PROTOCOL_ERROR
CLOSE_POLICY = CloseCode.POLICY
CLOSE_TOO_BIG = CloseCode.TOO_BIG
CLOSE_INTERNAL = CloseCode.INTERNAL
CLOSE_TRY_AGAIN = CloseCode.TRY_AGAIN
CLOSE_PERMISSION = CloseCode.PERMISSION


class HiveMindError(Exception):
    """Root of every error raised by HiveMind code.

    ``close_code`` is the websocket close code a link closes with when the
    peer caused this error (the remote errors set it); ``None`` for local
    errors, which are never sent.
    """

    close_code: int | None = None


#: Name used by the reference client for the root exception.
HiveMindException = HiveMindError


class ProtocolError(HiveMindError):
    """The peer sent something the protocol does not allow."""

    close_code = CLOSE_PROTOCOL_ERROR


class DecodingError(ProtocolError, ValueError):
    """Bytes, text encoding or JSON could not be parsed."""


class Z85DecodeError(DecodingError):
    """Invalid Z85 text (bad character, bad length, or a group out of range)."""


class InvalidMessage(DecodingError):
    """Well-formed data that is not a valid HiveMessage (unknown type, bad payload)."""


class UnsupportedProtocolVersion(DecodingError):
    """A binary frame announced a protocol version this implementation does not speak."""


class PayloadTooBig(ProtocolError):
    """A frame, a decompressed payload or a metadata block exceeded its limit."""

    close_code = CLOSE_TOO_BIG


class InvalidEncoding(HiveMindError, ValueError):
    """An encoding name that is not one of the supported wire names."""

    close_code = CLOSE_PROTOCOL_ERROR


class InvalidCipher(HiveMindError, ValueError):
    """A cipher name that is not one of the supported wire names."""

    close_code = CLOSE_PROTOCOL_ERROR


class CryptoError(HiveMindError):
    """A cryptographic operation failed."""

    close_code = CLOSE_POLICY


class InvalidKeySize(CryptoError, ValueError):
    """A key of the wrong length for the chosen cipher."""


class WrongEncryptionKey(CryptoError):
    """The key in use does not match the peer's."""


class DecryptionKeyError(WrongEncryptionKey):
    """Authentication failed: the frame was tampered with or encrypted under another key."""


#: Our preferred name for the authentication failure of a sealed frame.
DecryptionError = DecryptionKeyError


class EncryptionKeyError(WrongEncryptionKey):
    """Encryption failed (unusable key material)."""


class HandshakeError(HiveMindError):
    """The handshake could not establish a secure link."""

    close_code = CLOSE_POLICY


class AuthenticationFailed(HandshakeError):
    """Credentials were refused (wrong password, key or signature). Retrying will not help."""


class UnauthorizedKeyError(AuthenticationFailed):
    """The access key is unknown to the hub."""


class HandshakeReplayed(HandshakeError):
    """A password HANDSHAKE whose envelope was already used with this key (a replay)."""


class HandshakeThrottled(HandshakeError):
    """Too many handshakes: re-keys of one link (1008) or handshakes of one key (1013).

    The hub refuses before any key derivation; ``close_code`` is the one given.
    """

    def __init__(self, message: str, close_code: CloseCode = CloseCode.TRY_AGAIN) -> None:
        super().__init__(message)
        self.close_code = close_code


class NegotiationFailed(HandshakeError):
    """The two ends share no cipher or no encoding, or the handshake mode is impossible."""


class VersionRejected(HandshakeError):
    """The peer refused our protocol version."""


class PermissionDenied(HiveMindError):
    """The link's permissions do not allow this message."""

    close_code = CLOSE_PERMISSION


class InvalidState(HiveMindError):
    """The API was used in a state that does not allow it (a local bug, never the peer's)."""


class ConfigurationError(HiveMindError, RuntimeError):
    """The client lacks what it needs to connect (access key, host, credentials).

    A ``RuntimeError`` as in the reference client, which raises one for a
    missing identity.
    """


class HiveMindConnectionError(HiveMindError, ConnectionError):
    """The link could not be opened or was lost."""


class ConnectionClosed(HiveMindConnectionError):
    """The link is closed. ``code``/``reason`` are what the peer (or we) said when closing."""

    def __init__(self, code: int | None = None, reason: str = "") -> None:
        self.code = code
        self.reason = reason
        text = f"connection closed (code {code})" if code is not None else "connection closed"
        super().__init__(f"{text}: {reason}" if reason else text)


class ConnectionClosedOK(ConnectionClosed):
    """The link closed normally (1000/1001)."""


class ConnectionClosedError(ConnectionClosed):
    """The link closed with an error code, or without a close frame."""


class ConnectTimeout(HiveMindConnectionError, TimeoutError):
    """The hub did not complete the opening and handshake in time (retryable)."""


class SecureConnectionFailed(HiveMindConnectionError):
    """A TLS connection could not be established."""


class HiveMindEntryPointNotFound(HiveMindConnectionError):
    """Nothing listens at the given host and port."""
