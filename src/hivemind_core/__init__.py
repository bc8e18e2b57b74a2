"""HiveMind hub: listener, client database, permissions, routing, nested hives, agents.

Start one with the ``hivemind-core listen`` command, or from Python with
:func:`hivemind_core.service.run`.
"""

__all__: list[str] = []
