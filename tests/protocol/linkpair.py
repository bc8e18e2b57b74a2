"""Two sans-I/O connections joined in memory, for conversation-style tests."""

from __future__ import annotations

from hivemind_bus_client.connection import CloseRequested, Connection, Event, Role


class LinkPair:
    """A client and a hub connection whose frames are shuttled by :meth:`pump`.

    ``tap`` records every frame that crossed, as (direction, frame) pairs.
    """

    def __init__(self, client: Connection, hub: Connection) -> None:
        assert client.role is Role.CLIENT and hub.role is Role.HUB
        self.client = client
        self.hub = hub
        self.client_events: list[Event] = []
        self.hub_events: list[Event] = []
        self.tap: list[tuple[str, str | bytes]] = []

    def start(self) -> LinkPair:
        self.hub.start(0.0)
        self.client.start(0.0)
        self.pump()
        return self

    def pump(self, rounds: int = 20) -> None:
        for _ in range(rounds):
            moved = False
            for frame in self.hub.frames_to_send():
                self.tap.append(("down", frame))
                self.client.receive_frame(frame)
                moved = True
            for frame in self.client.frames_to_send():
                self.tap.append(("up", frame))
                self.hub.receive_frame(frame)
                moved = True
            self.client_events += self.client.events()
            self.hub_events += self.hub.events()
            if not moved:
                return

    def closes(self, side: str) -> list[CloseRequested]:
        events = self.client_events if side == "client" else self.hub_events
        return [e for e in events if isinstance(e, CloseRequested)]
