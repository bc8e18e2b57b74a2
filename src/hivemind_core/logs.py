"""What the hub logs, and what it never logs.

Secrets never reach a log: :class:`RedactingFilter` rewrites every record that
carries an ``authorization`` value (websockets' and aiohttp's own DEBUG request
lines include the request URL, whose query holds ``base64(useragent:key)``),
whatever logger emitted it. The CLI installs it on its stderr handler, the
listeners on the loggers of the libraries they run.

:func:`configure` sets up the CLI's logging: ``-v`` shows everything at DEBUG,
else only warnings; :func:`announce` (``listen``) adds the hub's own INFO lines (what it listens on,
each satellite connecting and leaving, each refusal and why), so
``hivemind-core listen`` says what it does.
"""

from __future__ import annotations

import logging
import re
import sys

__all__ = [
    "LIBRARY_LOGGERS",
    "RedactingFilter",
    "announce",
    "configure",
    "install_redaction",
    "redact",
]

#: Loggers of the libraries the listeners run, whose DEBUG lines may hold request URLs.
LIBRARY_LOGGERS = ("websockets", "websockets.server", "websockets.client", "aiohttp")

_SECRET = re.compile(r"(?i)(authorization[=:]\s*)(?:basic\s+)?[^&\s\"'<>]+")
_REDACTED = r"\1<redacted>"


def redact(text: str) -> str:
    """``text`` with every ``authorization`` value replaced by ``<redacted>``."""
    return _SECRET.sub(_REDACTED, text)


class RedactingFilter(logging.Filter):
    """Rewrites a record whose message holds an ``authorization`` value (never drops one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: let the handler report it as usual
            return True
        if "uthorization" not in message and "UTHORIZATION" not in message:
            return True
        record.msg = redact(message)
        record.args = None
        return True


_FILTER = RedactingFilter()


def install_redaction() -> None:
    """Put the redacting filter on the library loggers (idempotent)."""
    for name in LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)


def configure(verbose: bool) -> None:
    """The CLI's logging: stderr, redacted, DEBUG with ``verbose`` else WARNING.

    Like :func:`logging.basicConfig`, does nothing to a root logger that already
    has handlers (an embedding application's, a test runner's) beyond the
    redaction of the library loggers.
    """
    install_redaction()
    root = logging.getLogger()
    if root.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.addFilter(_FILTER)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.WARNING)


def announce() -> None:
    """Let the hub's own INFO lines through when the root logger shows only warnings."""
    hub = logging.getLogger("hivemind_core")
    if hub.getEffectiveLevel() > logging.INFO:
        hub.setLevel(logging.INFO)
