"""The connection under a hostile peer: plaintext after keying, replays and
reflections, compression bombs, pre-handshake input and deep nesting.

Each test drives real :class:`Connection` pairs frame by frame; the frames an
attacker sends are built with the protocol's own functions.
"""

from __future__ import annotations

import json
import tracemalloc
from typing import Any

import pytest
from ovos_bus_client.message import Message

from hivemind_bus_client.connection import (
    CloseRequested,
    Connection,
    HelloReceived,
    MessageReceived,
    Role,
    State,
)
from hivemind_bus_client.exceptions import CloseCode
from hivemind_bus_client.message import HiveMessage, HiveMessageType
from hivemind_bus_client.protocol import crypto, handshake, intercom
from hivemind_bus_client.protocol.events import FrameDropped, HandshakeComplete
from hivemind_bus_client.protocol.replay import NonceGuard, Verdict
from hivemind_bus_client.serialization import encode_frame

from .linkpair import LinkPair

MiB = 1024 * 1024
BUS = HiveMessage(HiveMessageType.BUS, Message("speak", {"utterance": "hi"}, {}))


def pair(hub_kw: dict[str, Any] | None = None, client_kw: dict[str, Any] | None = None) -> LinkPair:
    hub = Connection(Role.HUB, password="pw", peer="ua::1::sat::x", node_id="hub", **(hub_kw or {}))
    client = Connection(
        Role.CLIENT, password="pw", hello={"session": {"session_id": "s1"}}, **(client_kw or {})
    )
    lp = LinkPair(client, hub).start()
    assert hub.state is State.READY and client.state is State.READY
    return lp


def closes(conn: Connection) -> list[CloseRequested]:
    return [e for e in conn.events() if isinstance(e, CloseRequested)]


def split(events: list[Any]) -> tuple[list[HiveMessage], list[FrameDropped], list[CloseRequested]]:
    return (
        [e.message for e in events if isinstance(e, MessageReceived)],
        [e for e in events if isinstance(e, FrameDropped)],
        [e for e in events if isinstance(e, CloseRequested)],
    )


def bomb(inflated: int, mtype: HiveMessageType = HiveMessageType.PROPAGATE) -> bytes:
    """A compressed binary frame whose payload inflates to about ``inflated`` bytes."""
    inner = HiveMessage(HiveMessageType.BUS, Message("speak", {"utterance": "a" * inflated}, {}))
    msg = HiveMessage(mtype, inner) if mtype is not HiveMessageType.BUS else inner
    return encode_frame(msg, compressed=True)


# -- item 5: nothing in plaintext after keying ----------------------------------------


def test_a_plaintext_hello_on_a_keyed_hub_link_is_refused_with_1008() -> None:
    lp = pair()
    lp.hub.events()
    forged = {"session": {"session_id": "victim"}, "node_id": "phantom", "is_hub": True}
    lp.hub.receive_frame(HiveMessage(HiveMessageType.HELLO, forged).serialize())
    events = lp.hub.events()
    assert not [e for e in events if isinstance(e, HelloReceived)], "forged HELLO was acted on"
    (close,) = split(events)[2]
    assert close.code == CloseCode.POLICY and "unencrypted hello" in close.reason
    assert not close.pre_handshake


def test_a_plaintext_hello_on_a_keyed_client_link_is_refused() -> None:
    lp = pair()
    lp.client.events()
    lp.client.receive_frame(HiveMessage(HiveMessageType.HELLO, {"peer": "evil"}).serialize())
    assert [c.code for c in closes(lp.client)] == [CloseCode.POLICY]
    assert lp.client.peer != "evil"


def test_the_stock_clients_repeated_plaintext_handshake_is_still_answered() -> None:
    # The stock client sends a fresh HANDSHAKE every 5 s until it sees an
    # answer: one may arrive, in plaintext, after the hub keyed the link.
    lp = pair()
    lp.hub.events()
    lp.hub.frames_to_send()
    late = Connection(Role.CLIENT, password="pw")
    step = handshake.client_reply({"password": True}, late)
    assert step.reply is not None
    lp.hub.receive_frame(HiveMessage(HiveMessageType.HANDSHAKE, step.reply).serialize())
    assert not closes(lp.hub) and lp.hub.state is State.READY
    (answer,) = lp.hub.frames_to_send()
    assert json.loads(answer)["msg_type"] == "shake" and "envelope" in json.loads(answer)["payload"]


# -- item 6: replay and reflection ----------------------------------------------------


@pytest.mark.parametrize("binarize", [False, True], ids=["text", "binary"])
def test_a_replayed_frame_is_acted_on_once_and_counted(binarize: bool) -> None:
    lp = pair({"binarize": binarize}, {"binarize": binarize})
    lp.hub.events()
    lp.client.send(BUS)
    (frame,) = lp.client.frames_to_send()
    assert isinstance(frame, bytes) is binarize
    for _ in range(5):
        lp.hub.receive_frame(frame)
    got, dropped, closed = split(lp.hub.events())
    assert got == [BUS], f"a frame sent once and replayed 4 times was acted on {len(got)} times"
    assert [d.reason for d in dropped] == ["replay"] * 4 and dropped[-1].count == 4
    assert not closed and lp.hub.state is State.READY
    assert lp.hub.gate.replays_dropped == 4 and lp.hub.gate.reflections_dropped == 0


def test_a_replay_spelled_differently_is_still_a_replay() -> None:
    # Hex decodes either case, and the tag may travel appended to the
    # ciphertext: the nonce is compared as bytes, not as text.
    lp = pair({"encodings": ["JSON-HEX"]}, {"encodings": ["JSON-HEX"]})
    lp.hub.events()
    lp.client.send(BUS)
    (frame,) = lp.client.frames_to_send()
    lp.hub.receive_frame(frame)
    env = json.loads(frame)
    upper = json.dumps({k: v.upper() for k, v in env.items()})
    joined = json.dumps({"ciphertext": env["ciphertext"] + env["tag"], "nonce": env["nonce"]})
    lp.hub.receive_frame(upper)
    lp.hub.receive_frame(joined)
    got, dropped, closed = split(lp.hub.events())
    assert got == [BUS] and [d.reason for d in dropped] == ["replay", "replay"] and not closed


@pytest.mark.parametrize("binarize", [False, True], ids=["text", "binary"])
def test_a_reflected_frame_is_acted_on_zero_times(binarize: bool) -> None:
    lp = pair({"binarize": binarize}, {"binarize": binarize})
    lp.hub.events()
    lp.hub.send(BUS)
    (ours,) = lp.hub.frames_to_send()
    lp.hub.receive_frame(ours)  # the hub's own frame, sent back to it
    got, dropped, closed = split(lp.hub.events())
    assert got == [], "the hub acted on its own frame"
    assert [d.reason for d in dropped] == ["reflection"] and not closed
    assert lp.hub.gate.reflections_dropped == 1
    # The client still reads it, and the link still works both ways.
    lp.client.receive_frame(ours)
    lp.client.send(BUS)
    lp.client_events.clear()
    lp.hub_events.clear()
    lp.pump()
    assert split(lp.client_events)[0] == [BUS] and split(lp.hub_events)[0] == [BUS]


def test_the_hubs_reflected_hello_is_dropped() -> None:
    lp = pair()
    lp.hub.announce("ua::1::sat::final")
    hello_frames = lp.hub.frames_to_send()
    lp.hub.events()
    lp.hub.receive_frame(hello_frames[0])
    events = lp.hub.events()
    assert not [e for e in events if isinstance(e, HelloReceived)]
    assert [d.reason for d in split(events)[1]] == ["reflection"]


def test_replays_are_logged_but_not_every_one(caplog: pytest.LogCaptureFixture) -> None:
    lp = pair()
    lp.client.send(BUS)
    (frame,) = lp.client.frames_to_send()
    caplog.set_level("WARNING", logger="hivemind_bus_client.protocol")
    for _ in range(101):
        lp.hub.receive_frame(frame)
    warnings = [r.getMessage() for r in caplog.records if "dropped a replay" in r.getMessage()]
    assert len(warnings) == 3, warnings  # the 1st, the 10th and the 100th
    assert "(100 so far)" in warnings[-1] and "ua::1::sat::x" in warnings[0]


def test_the_nonce_memory_is_bounded_and_forgets_the_oldest() -> None:
    guard = NonceGuard(3)
    for n in range(5):
        assert guard.check(bytes([n]) * 12) is Verdict.FRESH
    guard.sent(b"s" * 12)
    assert len(guard) == 4  # 3 received + 1 sent
    assert guard.check(bytes([4]) * 12) is Verdict.REPLAY
    assert guard.check(bytes([0]) * 12) is Verdict.FRESH  # fell out of the window
    assert guard.check(b"s" * 12) is Verdict.REFLECTION
    off = NonceGuard(0)
    assert off.check(b"x") is Verdict.FRESH and off.check(b"x") is Verdict.FRESH
    assert len(off) == 0


def test_the_replay_memory_of_a_busy_link_stays_under_300_kib() -> None:
    tracemalloc.start()
    try:
        guard = NonceGuard()  # the default window
        for n in range(10_000):
            guard.check(n.to_bytes(16, "big"))
            guard.sent((n + 10**9).to_bytes(16, "big"))
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert len(guard) == 2 * 1024
    assert held < 300 * 1024, f"10,000 frames each way left {held // 1024} KiB of nonce memory"


def test_the_window_is_configurable_on_the_connection() -> None:
    lp = pair({"replay_window": 0})
    lp.hub.events()
    lp.client.send(BUS)
    (frame,) = lp.client.frames_to_send()
    lp.hub.receive_frame(frame)
    lp.hub.receive_frame(frame)
    assert len(split(lp.hub.events())[0]) == 2  # turned off: both acted on


# -- item 7: a bound on what a compressed frame inflates to ----------------------------


def _peak_while(fn: Any) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_compression_bomb_is_refused_with_1009_and_costs_under_3_mib() -> None:
    lp = pair({"binarize": True}, {"binarize": True})
    lp.hub.events()
    frame = lp.client.cipher.seal_bytes(bomb(12 * MiB))  # type: ignore[union-attr]
    assert len(frame) < 20_000  # about 12 KB on the wire, under every raw limit
    peak = _peak_while(lambda: lp.hub.receive_frame(frame))
    got, _, closed = split(lp.hub.events())
    assert not got and [c.code for c in closed] == [CloseCode.TOO_BIG]
    assert "decompressed payload exceeds" in closed[0].reason
    assert peak < 3 * MiB, f"a 12 KB bomb cost {peak / MiB:.1f} MiB"


def test_the_inflation_bound_is_configurable_and_under_the_raw_limit() -> None:
    lp = pair({"binarize": True, "max_inflated": 4 * MiB}, {"binarize": True})
    lp.hub.events()
    lp.hub.receive_frame(lp.client.cipher.seal_bytes(bomb(2 * MiB)))  # type: ignore[union-attr]
    got, _, closed = split(lp.hub.events())
    assert len(got) == 1 and not closed
    # Never above max_size, whatever max_inflated says.
    small = pair({"binarize": True, "max_inflated": 4 * MiB, "max_size": MiB}, {"binarize": True})
    small.hub.events()
    small.hub.receive_frame(small.client.cipher.seal_bytes(bomb(2 * MiB)))  # type: ignore[union-attr]
    assert [c.code for c in split(small.hub.events())[2]] == [CloseCode.TOO_BIG]


def test_an_uncompressed_json_frame_over_the_inflation_bound_is_still_read() -> None:
    lp = pair()
    lp.hub.events()
    big = HiveMessage(HiveMessageType.BUS, Message("speak", {"utterance": "a" * 2 * MiB}, {}))
    lp.client.send(big)
    lp.pump()
    assert [m.payload.data["utterance"][:3] for m in split(lp.hub_events)[0]] == ["aaa"]


# -- item 8: nothing inflated or parsed before the handshake ---------------------------


def test_a_binary_bomb_before_the_handshake_is_refused_unopened() -> None:
    hub = Connection(Role.HUB, password="pw")
    hub.start()
    frame = bomb(12 * MiB)
    peak = _peak_while(lambda: hub.receive_frame(frame))
    (close,) = closes(hub)
    assert close.code == CloseCode.PROTOCOL_ERROR and close.pre_handshake
    assert "binary frame before the handshake" in close.reason
    assert peak < 256 * 1024, f"a pre-handshake bomb cost {peak / MiB:.1f} MiB"


def test_a_big_text_frame_before_the_handshake_is_refused_with_1009() -> None:
    hub = Connection(Role.HUB, password="pw")
    hub.start()
    offer = HiveMessage(HiveMessageType.HANDSHAKE, {"pad": "x" * 20_000}).serialize()
    hub.receive_frame(offer)
    (close,) = closes(hub)
    assert close.code == CloseCode.TOO_BIG and close.pre_handshake


def test_the_opening_fits_the_pre_handshake_bound_even_with_4096_bit_keys() -> None:
    hub_key, client_key = crypto.create_private_key(4096), crypto.create_private_key(4096)
    hub = Connection(Role.HUB, private_key=hub_key, peer="p" * 200, node_id="n" * 200)
    client = Connection(Role.CLIENT, private_key=client_key, hello={"site_id": "s" * 2000})
    lp = LinkPair(client, hub).start()
    assert hub.state is State.READY and client.state is State.READY
    assert max(len(f) for _, f in lp.tap) > 2000  # the RSA answer is big, and it fits


def test_every_close_before_the_handshake_says_so() -> None:
    hub = Connection(Role.HUB, password="pw", handshake_timeout=5)
    hub.start(0.0)
    hub.handle_timer(5.0)
    (timeout,) = closes(hub)
    assert timeout.code == CloseCode.TRY_AGAIN and timeout.pre_handshake and timeout.error is None
    wrong = Connection(Role.HUB, password="pw")
    wrong.start()
    wrong.receive_frame(BUS.serialize())
    (early,) = closes(wrong)
    assert early.pre_handshake and early.code == CloseCode.PROTOCOL_ERROR
    lp = pair()
    lp.hub.events()
    lp.hub.receive_frame("not json")
    (late,) = closes(lp.hub)
    assert not late.pre_handshake and late.code == CloseCode.PROTOCOL_ERROR


# -- item 18: deep nesting is a decoding error ------------------------------------------


def _nested(depth: int) -> HiveMessage:
    msg = BUS
    for _ in range(depth):
        msg = HiveMessage(HiveMessageType.PROPAGATE, msg)
    return msg


def test_deep_json_before_the_handshake_closes_with_1002() -> None:
    hub = Connection(Role.HUB, password="pw")
    hub.start()
    hub.receive_frame("[" * 8000 + "]" * 8000)  # under the 16 KiB bound, too deep to parse
    (close,) = closes(hub)
    assert close.code == CloseCode.PROTOCOL_ERROR and "nested too deeply" in close.reason


@pytest.mark.parametrize("binarize", [False, True], ids=["text", "binary"])
def test_deep_json_in_a_sealed_frame_closes_with_1002(binarize: bool) -> None:
    lp = pair()
    lp.hub.events()
    cipher = lp.client.cipher
    assert cipher is not None
    deep = "[" * 5000 + "]" * 5000
    marked = HiveMessage(HiveMessageType.BUS, {"type": "x", "data": {"k": "MARK"}, "context": {}})
    if binarize:
        plain = encode_frame(marked, compressed=False)
        frame: str | bytes = cipher.seal_bytes(plain.replace(b'"MARK"', deep.encode()))
    else:
        frame = cipher.seal_text(marked.serialize().replace('"MARK"', deep))
    lp.hub.receive_frame(frame)
    (close,) = closes(lp.hub)
    assert close.code == CloseCode.PROTOCOL_ERROR, close


def test_transport_messages_wrapped_too_deep_close_with_1002() -> None:
    lp = pair()
    lp.hub.events()
    lp.client.send(_nested(32))
    lp.pump()
    assert len(split(lp.hub_events)[0]) == 1  # 32 wrappers are fine
    lp.hub_events.clear()
    lp.client.send(_nested(33))
    lp.pump()
    got, _, closed = split(lp.hub_events)
    assert not got and [c.code for c in closed] == [CloseCode.PROTOCOL_ERROR]
    assert "nested deeper than 32" in closed[0].reason


def test_hundreds_of_wrappers_close_with_1002_not_a_recursion_error() -> None:
    lp = pair()
    lp.hub.events()
    text = '{"msg_type": "propagate", "payload": ' * 600 + BUS.serialize() + "}" * 600
    lp.hub.receive_frame(lp.client.cipher.seal_text(text))  # type: ignore[union-attr]
    assert [c.code for c in closes(lp.hub)] == [CloseCode.PROTOCOL_ERROR]


# -- item 18: no secret in an error or a log line ---------------------------------------

PASSWORD = "pw-SENTINEL-7d1f"
PSK = "PSK-SENTINEL-16c"


def test_no_secret_reaches_an_error_or_a_log_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    texts: list[str] = []
    scenarios = [
        ({"password": PASSWORD}, {"password": PASSWORD + "x"}),  # wrong password, both ways
        ({"password": PASSWORD + "x"}, {"password": PASSWORD}),
        ({"crypto_key": PSK}, {"crypto_key": PSK[::-1]}),  # wrong pre-shared key
        ({"crypto_key": PSK, "password": PASSWORD}, {"crypto_key": PSK, "password": PASSWORD}),
    ]
    for hub_kw, client_kw in scenarios:
        hub = Connection(Role.HUB, **hub_kw)
        client = Connection(Role.CLIENT, **client_kw)
        lp = LinkPair(client, hub).start()
        for junk in ("not json", b"\x00\x01", "[" * 3000, _nested(40).serialize()):
            lp.hub.receive_frame(junk)
            lp.client.receive_frame(junk)
        events = lp.client_events + lp.hub_events + lp.hub.events() + lp.client.events()
        for ev in events:
            texts.append(repr(ev))
            if isinstance(ev, CloseRequested) and ev.error is not None:
                texts.append(str(ev.error))
        texts += [str(lp.hub.close_reason), str(lp.client.close_reason), repr(lp.hub.gate)]
    assert any(isinstance(e, HandshakeComplete) for e in events)  # the last one worked
    texts += [r.getMessage() for r in caplog.records]
    # The password envelope is a replayable proof and a fast hash of the password.
    leaks = [t for t in texts if PASSWORD in t or PSK in t or PSK[::-1] in t]
    assert not leaks, leaks[:3]


@pytest.mark.parametrize("inner", ["deep-json", "deep-wrappers"])
def test_a_trusted_intercom_nested_too_deep_is_tampered_not_a_recursion_error(inner: str) -> None:
    sender, recipient = crypto.create_private_key(), crypto.create_private_key()
    trust = intercom.TrustStore({"s": crypto.public_key_pem(sender)})
    if inner == "deep-json":
        text = '{"msg_type": "bus", "payload": {"type": "x", "data": ' + "[" * 5000
        text += "]" * 5000 + "}}"
    else:
        text = _nested(40).serialize()
    payload = crypto.hybrid_encrypt(text.encode(), recipient.public_key(), sender)
    opened = intercom.open_sealed(payload, recipient, trust)
    assert opened.result is intercom.IntercomResult.TAMPERED


def test_peer_values_quoted_in_errors_are_cut_to_a_few_hundred_characters() -> None:
    lp = pair()
    lp.hub.events()
    forged = json.dumps({"msg_type": "x" * 100_000, "payload": {}})
    lp.hub.receive_frame(lp.client.cipher.seal_text(forged))  # type: ignore[union-attr]
    (close,) = closes(lp.hub)
    assert close.error is not None and len(str(close.error)) < 300, len(str(close.error))
    hub = Connection(Role.HUB, password="pw")
    hub.start()
    shake = {"encodings": ["y" * 1000] * 10, "envelope": crypto.password_envelope("pw")}
    hub.receive_frame(HiveMessage(HiveMessageType.HANDSHAKE, shake).serialize())
    (refused,) = closes(hub)
    assert refused.error is not None and len(str(refused.error)) < 400, len(str(refused.error))
    client = Connection(Role.CLIENT, password="pw")
    client.start()
    client.receive_frame(HiveMessage(HiveMessageType.HANDSHAKE, {"password": True}).serialize())
    answer = {"envelope": crypto.password_envelope("pw"), "cipher": "z" * 50_000}
    client.receive_frame(HiveMessage(HiveMessageType.HANDSHAKE, answer).serialize())
    (bad,) = closes(client)
    assert bad.error is not None and len(str(bad.error)) < 300, len(str(bad.error))


def test_a_password_holding_raw_bytes_works_and_no_part_of_it_is_quoted() -> None:
    # A password read from a command line in another encoding holds lone
    # surrogates standing for raw bytes; Python's own error quotes them.
    raw = PASSWORD + "\udcff"
    lp = LinkPair(Connection(Role.CLIENT, password=raw), Connection(Role.HUB, password=raw)).start()
    assert lp.client.state is State.READY and lp.hub.state is State.READY
    broken = PASSWORD + "\ud800"  # stands for no bytes at all: a configuration error
    lp = LinkPair(
        Connection(Role.CLIENT, password=broken), Connection(Role.HUB, password=broken)
    ).start()
    (close,) = lp.closes("client")
    assert close.code == CloseCode.INTERNAL and close.error is not None
    text = str(close.error) + close.reason
    assert "\ud800" not in text and "position" not in text and PASSWORD not in text
