"""The agent plugin interface and the entry-point loader."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from hivemind_core import plugins
from hivemind_core.config import HubConfig
from hivemind_core.errors import AgentError

__all__ = ["AGENT_GROUP", "Agent", "AgentError", "AnswerCallback", "ReplyCallback", "load_agent"]

LOG = logging.getLogger(__name__)

#: Entry-point group agents register under.
AGENT_GROUP = plugins.AGENT_GROUP

#: Called once by :meth:`Agent.ask` with the answer dict, or None to decline.
AnswerCallback = Callable[[dict[str, Any] | None], None]

#: Called by an agent with an OVOS message dict ``{type, data, context}``
#: that may be meant for satellites (routed by ``context.destination``).
ReplyCallback = Callable[[dict[str, Any]], None]

_BUILTIN = {
    "embedded": "hivemind_core.agents.embedded:EmbeddedAgent",
    "ovos": "hivemind_core.agents.ovos:OVOSAgent",
}


class Agent(ABC):
    """Base class of agents.

    Life cycle: the hub builds the agent with its config, awaits
    :meth:`start` with the reply callback before it accepts connections,
    calls :meth:`inject` for every message a satellite sends, and awaits
    :meth:`stop` on shutdown. All calls happen on the hub's event loop;
    :meth:`inject` must not block.

    Args:
        config: the hub configuration (agents read their own fields from it).
    """

    #: Entry-point name (informational).
    name = "agent"

    def __init__(self, config: HubConfig | None = None) -> None:
        self.config = config or HubConfig()
        self.reply: ReplyCallback = _no_reply

    async def start(self, reply: ReplyCallback) -> None:
        """Begin: remember where replies go and connect to whatever answers."""
        self.reply = reply

    @abstractmethod
    def inject(self, message: dict[str, Any]) -> None:
        """Handle one OVOS message dict sent by a satellite (already stamped by the hub).

        The dict belongs to the agent: the hub made it for this call.
        """

    def ask(self, message: dict[str, Any], answer: AnswerCallback) -> None:
        """Answer a QUERY/CASCADE request (an OVOS message dict) through ``answer``.

        Call ``answer(reply_dict)`` once with the answer, or ``answer(None)`` to
        decline (the hub then forwards the query upstream). Default: decline.
        """
        answer(None)

    def observe(self, message: dict[str, Any], peer: str) -> None:  # noqa: B027 - optional hook
        """A SHARED_BUS message from ``peer`` (watched, never injected). Default: ignore."""

    def client_connected(self, peer: str, session_id: str) -> None:  # noqa: B027
        """A satellite finished its handshake and HELLO. Default: nothing."""

    def client_disconnected(self, peer: str) -> None:  # noqa: B027
        """A satellite went away. Default: nothing."""

    async def stop(self) -> None:  # noqa: B027 - optional hook
        """Release connections and tasks."""


def _no_reply(message: dict[str, Any]) -> None:
    LOG.debug("agent reply before start(): %s", message.get("type"))


def load_agent(config: HubConfig) -> Agent:
    """Build the agent ``config.agent`` names (entry point, built-in name or ``module:Class``).

    Raises:
        AgentError: no such agent, or it is not an :class:`Agent`.
    """
    cls: type[Agent] = plugins.load(
        AGENT_GROUP, config.agent or "embedded", Agent, _BUILTIN, kind="agent", error=AgentError
    )
    return cls(config)
