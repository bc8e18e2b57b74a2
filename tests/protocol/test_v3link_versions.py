"""Protocol v3 beside v1 on one Connection, and the PSK hand-off.

A v3 hub serves v1 clients; a v3 client answers a v1 hub over v1; the PSK
comes in through ``PSKNeeded`` / ``provide_psk`` while the handshake waits.
"""

from __future__ import annotations

import pytest

from hivemind_bus_client.exceptions import (
    CloseCode,
    ConfigurationError,
    InvalidState,
)
from hivemind_bus_client.protocol import crypto
from hivemind_bus_client.protocol.connection import (
    CloseRequested,
    Connection,
    Role,
    State,
    V3Settings,
)
from hivemind_bus_client.protocol.events import PSKNeeded
from hivemind_bus_client.protocol.message import HiveMessage, HiveMessageType
from hivemind_bus_client.protocol.v3handshake import (
    REASON_FAILURE,
    XX,
    derive_psk,
)

from .linkpair import LinkPair
from .v3pair import (
    CLIENT_PUB,
    CLIENT_STATIC,
    HELLO,
    HUB_KEY,
    HUB_STATIC,
    PSK,
    bus,
    completed,
    pair,
    received,
)

# -- v1 beside v3 ----------------------------------------------------------------------


def test_a_client_with_max_protocol_version_1_gets_v1():
    lp = pair(client_v3={"max_protocol_version": 1})
    for events in (lp.hub_events, lp.client_events):
        done = completed(events)
        assert (done.mode, done.protocol, done.peer_static) == ("password", 1, None)
    assert lp.hub.v3.declined and not lp.client.v3.running
    lp.client.send(bus())
    lp.pump()
    assert received(lp.hub_events) == [bus()]
    # v1 frames: encrypted text envelopes, no Noise.
    assert all("ciphertext" in f for _, f in lp.tap[4:])


def test_a_v1_client_without_v3_settings_gets_v1_from_a_v3_hub():
    lp = pair(client_has_v3=False)
    assert completed(lp.hub_events).mode == "password"
    assert lp.hub.state is State.READY and lp.client.state is State.READY


def test_a_v1_hub_is_answered_over_v1_by_a_v3_client():
    hub = Connection(Role.HUB, password="pw", private_key=HUB_KEY, peer="p", node_id="n")
    client = Connection(
        Role.CLIENT, password="pw", hello=dict(HELLO), v3=V3Settings(static_private=CLIENT_STATIC)
    )
    lp = LinkPair(client, hub).start()
    assert completed(lp.client_events).protocol == 1 and lp.client.state is State.READY
    assert not [e for e in lp.client_events if isinstance(e, PSKNeeded)]


def test_a_v3_client_without_a_password_uses_v1():
    hub = Connection(
        Role.HUB,
        private_key=HUB_KEY,
        peer="p",
        node_id="n",
        v3=V3Settings(static_private=HUB_STATIC, psk=PSK),
    )
    client = Connection(
        Role.CLIENT,
        private_key=crypto.create_private_key(),
        hello=dict(HELLO),
        v3=V3Settings(static_private=CLIENT_STATIC, psk=PSK),
    )
    lp = LinkPair(client, hub).start()
    assert completed(lp.hub_events).mode == "rsa"


def test_a_noise_handshake_after_v1_keying_is_not_v3():
    lp = pair(client_v3={"max_protocol_version": 1})
    assert lp.hub.v3.hub_takes({"noise": {"msg": "00"}}) is False


# -- the PSK hand-off --------------------------------------------------------------------


def test_psk_derived_by_both_sides_on_request():
    hub = Connection(
        Role.HUB,
        password="pw",
        private_key=HUB_KEY,
        peer="p",
        node_id="hub-node",
        v3=V3Settings(static_private=HUB_STATIC),
    )
    client = Connection(
        Role.CLIENT, password="pw", hello=dict(HELLO), v3=V3Settings(static_private=CLIENT_STATIC)
    )
    lp = LinkPair(client, hub).start()
    assert [e for e in lp.hub_events if isinstance(e, PSKNeeded)] == [PSKNeeded("hub-node")]
    assert [e for e in lp.client_events if isinstance(e, PSKNeeded)] == [PSKNeeded("hub-node")]
    assert lp.tap[-1][0] == "down" and len(lp.tap) == 2  # the client waits for its PSK
    client.provide_psk(derive_psk("pw", "hub-node"))
    lp.pump()
    assert hub.state is State.HANDSHAKING and lp.tap[-1][0] == "up"  # m1 waits in the hub
    hub.provide_psk(derive_psk("pw", "hub-node"))
    lp.pump()
    assert hub.state is State.READY and client.state is State.READY


def test_provide_psk_misuse():
    lp = pair()
    with pytest.raises(InvalidState, match="already"):
        lp.hub.provide_psk(PSK)
    v1 = Connection(Role.HUB, password="pw")
    with pytest.raises(InvalidState, match="without v3"):
        v1.provide_psk(PSK)
    waiting = Connection(Role.HUB, password="pw", v3=V3Settings(static_private=HUB_STATIC))
    waiting.start()
    with pytest.raises(InvalidState, match="32 raw bytes"):
        waiting.provide_psk(b"short")
    waiting.close()
    waiting.provide_psk(PSK)  # a derivation that finished after the close: ignored
    assert waiting.v3.waiting_for_psk


def test_a_second_message_before_the_psk_is_refused():
    hub = Connection(Role.HUB, password="pw", v3=V3Settings(static_private=HUB_STATIC))
    hub.start()
    shake = HiveMessage(HiveMessageType.HANDSHAKE, {"noise": {"pattern": XX, "msg": "00"}})
    hub.receive_frame(shake.serialize())
    hub.receive_frame(shake.serialize())
    closes = [e for e in hub.events() if isinstance(e, CloseRequested)]
    assert len(closes) == 1 and closes[0].code == CloseCode.POLICY
    assert closes[0].reason.startswith(REASON_FAILURE + "a second message")


def test_connection_lost_drops_the_keys():
    lp = pair()
    lp.hub.connection_lost(1000)
    assert lp.hub.v3.transport is None and lp.hub.v3.result is None
    assert lp.hub.v3.peer_static == CLIENT_PUB
    with pytest.raises(InvalidState):
        lp.hub.encode(bus())


def test_settings_check_key_sizes_and_hide_secrets():
    with pytest.raises(ConfigurationError):
        V3Settings(static_private=b"short")
    with pytest.raises(ConfigurationError):
        V3Settings(static_private=HUB_STATIC, psk=b"x" * 31)
    text = repr(V3Settings(static_private=HUB_STATIC, psk=PSK, ephemeral_private=HUB_STATIC))
    assert HUB_STATIC.hex() not in text and str(HUB_STATIC) not in text and str(PSK) not in text


def test_a_v3_hub_never_resends_its_offer():
    hub = Connection(
        Role.HUB, password="pw", resend_offer=(0.5,), v3=V3Settings(static_private=HUB_STATIC)
    )
    hub.start(0.0)
    assert len(hub.frames_to_send()) == 2
    assert hub.get_timer() == hub.handshake_timeout  # only the handshake deadline
    hub.handle_timer(0.6)
    assert hub.frames_to_send() == []
