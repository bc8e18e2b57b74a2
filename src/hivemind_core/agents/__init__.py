"""Agents: what answers the satellites.

An agent receives the OVOS messages the hub injects on behalf of satellites
and hands back, through the reply callback, every message that should travel
to them; the hub routes each reply by ``context.destination``. Agents are
plugins of the ``hivemind.agents`` entry-point group:

* ``embedded`` (:class:`~.embedded.EmbeddedAgent`): built in, needs nothing
  else installed; answers time, date, echo and help utterances;
* ``ovos`` (:class:`~.ovos.OVOSAgent`): bridges to an ``ovos-messagebus``.
"""

from hivemind_core.agents.base import Agent, AgentError, ReplyCallback, load_agent

__all__ = ["Agent", "AgentError", "ReplyCallback", "load_agent"]
