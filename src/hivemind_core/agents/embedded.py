"""The embedded agent: answers satellites with nothing else installed.

It understands a handful of utterances (``recognizer_loop:utterance``), chosen
so that a fresh ``hivemind-core listen`` can prove a round trip:

* the time ("what time is it"), the date ("what day is it", "what's the date");
* echo ("echo <text>", "say <text>", "repeat <text>");
* help.

Anything else gets a short, deterministic hint. The answer is a ``speak``
message built the way OVOS' ``Message.reply`` builds one (context copied,
``source`` and ``destination`` swapped), so the hub routes it back to the
satellite that asked.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable
from typing import Any

from hivemind_core.agents.base import Agent, AnswerCallback

__all__ = ["EmbeddedAgent", "answer"]

HELP = (
    "I am the embedded HiveMind agent. Ask me what time it is, what the date is, "
    "or say echo followed by some words."
)

_ECHO = re.compile(r"^\s*(?:echo|say|repeat)\b[\s,:]*(.*)$", re.IGNORECASE | re.DOTALL)
_TIME = re.compile(r"\b(time|clock|hour)\b", re.IGNORECASE)
_DATE = re.compile(r"\b(date|day|today)\b", re.IGNORECASE)
_HELP = re.compile(r"\b(help|what can you do)\b", re.IGNORECASE)


def answer(utterance: str, now: datetime.datetime | None = None) -> str:
    """The embedded agent's answer to ``utterance`` at ``now`` (local time by default)."""
    now = now or datetime.datetime.now()
    text = utterance.strip()
    m = _ECHO.match(text)
    if m:
        return m.group(1).strip() or "Echo what? Say echo followed by some words."
    if _HELP.search(text):
        return HELP
    if _TIME.search(text):
        return f"It is {now.strftime('%H:%M')}."
    if _DATE.search(text):
        return f"Today is {now.strftime('%A, %B')} {now.day}, {now.year}."
    return f"I heard: {text}. Say help to hear what I can do."


def _reply_context(context: dict[str, Any]) -> dict[str, Any]:
    out = dict(context)
    out["source"], out["destination"] = context.get("destination"), context.get("source")
    return out


class EmbeddedAgent(Agent):
    """Answers utterances itself (see the module docstring); ignores every other message."""

    name = "embedded"

    #: Clock used for time and date answers (tests pin it).
    clock: Callable[[], datetime.datetime] = staticmethod(datetime.datetime.now)

    def inject(self, message: dict[str, Any]) -> None:
        """Answer ``recognizer_loop:utterance``; drop the rest."""
        reply = self.respond(message)
        if reply is not None:
            self.reply(reply)

    def ask(self, message: dict[str, Any], answer: AnswerCallback) -> None:
        """QUERY/CASCADE: the same answer as :meth:`inject`, or decline."""
        answer(self.respond(message))

    def respond(self, message: dict[str, Any]) -> dict[str, Any] | None:
        """The ``speak`` reply to an utterance message, or None for other messages."""
        if message.get("type") != "recognizer_loop:utterance":
            return None
        data = message.get("data") or {}
        utterances = data.get("utterances") if isinstance(data, dict) else None
        first = utterances[0] if isinstance(utterances, list) and utterances else ""
        text = answer(str(first), self.clock())
        context = message.get("context")
        ctx = _reply_context(context if isinstance(context, dict) else {})
        reply_data: dict[str, Any] = {
            "utterance": text,
            "expect_response": False,
            "meta": {"skill": "hivemind.embedded"},
        }
        lang = data.get("lang") if isinstance(data, dict) else None
        if isinstance(lang, str):
            reply_data["lang"] = lang
        return {"type": "speak", "data": reply_data, "context": ctx}
