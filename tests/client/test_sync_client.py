"""HiveMessageBusClient over real websockets against the in-process fake hub."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from ovos_bus_client.message import Message

from hivemind_bus_client import crypto
from hivemind_bus_client.client import BinaryDataCallbacks, HiveMessageBusClient
from hivemind_bus_client.exceptions import (
    AuthenticationFailed,
    ConfigurationError,
    ConnectTimeout,
    HiveMindEntryPointNotFound,
    InvalidState,
    NegotiationFailed,
    UnauthorizedKeyError,
)
from hivemind_bus_client.identity import NodeIdentity
from hivemind_bus_client.message import HiveMessage, HiveMessageType, HiveMindBinaryPayloadType
from support.net import free_port, wait_until
from support.silent import silent_websocket_server

from .fakehub import Account, FakeHub

T = HiveMessageType
MakeClient = Callable[..., HiveMessageBusClient]


def utterance(text: str) -> Message:
    return Message("recognizer_loop:utterance", {"utterances": [text]})


def eventually(check: Callable[[], Any], timeout: float = 5.0) -> Any:
    """``wait_until(check)``, returning what ``check`` finally gave."""
    seen: list[Any] = []
    wait_until(lambda: seen.append(check()) or seen[-1], timeout=timeout, interval=0.01)
    return seen[-1]


# -- connecting ---------------------------------------------------------------------


def test_connect_round_trip_and_hello(hub: FakeHub, make_client: MakeClient) -> None:
    client = make_client(hub, site_id="Büro")
    client.connect()
    assert client.connected
    hello = eventually(lambda: hub.hellos)[-1]
    assert hello["site_id"] == "Büro"
    session_id = hello["session"]["session_id"]
    assert session_id == client.session_id and session_id != "default"
    assert len(session_id) == 36  # a uuid
    assert client.peer == f"HiveMessageBusClientV0.0.1::1::test::{session_id}"
    reply = client.wait_for_response(utterance("héllo"), reply_type="speak")
    assert reply is not None and reply.payload.data["utterance"] == "echo: héllo"
    sent = hub.of_type(T.BUS)[-1].payload
    assert sent.context["session"] == {"session_id": session_id, "site_id": "Büro"}
    assert sent.context["destination"] == "HiveMind"
    assert sent.context["platform"] == "HiveMessageBusClientV0.0.1"


@pytest.mark.parametrize("host", ["ws://127.0.0.1", "127.0.0.1", "127.0.0.1:{port}"])
def test_host_forms(hub: FakeHub, make_client: MakeClient, host: str) -> None:
    kwargs: dict[str, Any] = {"host": host.format(port=hub.port)}
    if "{port}" in host:
        kwargs["port"] = None
    client = make_client(hub, **kwargs)
    client.connect()
    assert client.connected


def test_binarize_negotiated(make_client: MakeClient) -> None:
    with FakeHub([Account("sat-key", "hunter22")], binarize=True) as fake:
        client = make_client(fake)
        client.connect()
        assert client.handshake_info["binarize"] is True
        reply = client.wait_for_response(utterance("bin"), reply_type="speak")
        assert reply is not None and reply.payload.data["utterance"] == "echo: bin"
        off = make_client(fake, binarize=False)
        off.connect()
        assert off.handshake_info["binarize"] is False


@pytest.mark.parametrize("silent", [False, True])
def test_wrong_key(make_client: MakeClient, silent: bool) -> None:
    with FakeHub([Account("sat-key")], silent_refusal=silent) as fake:
        client = make_client(fake, key="wrong")
        with pytest.raises(UnauthorizedKeyError, match="access key"):
            client.connect()
        assert not client.connected


def test_wrong_password(hub: FakeHub, make_client: MakeClient) -> None:
    client = make_client(hub, password="not-it")
    started = time.monotonic()
    with pytest.raises(AuthenticationFailed):
        client.connect()
    assert time.monotonic() - started < 2


def test_no_common_encoding(make_client: MakeClient) -> None:
    """A cipher/encoding mismatch is a NegotiationFailed, never an AuthenticationFailed.

    The wire closes both with 1008; the hub's close reason says which it was.
    """
    with FakeHub([Account("sat-key", "hunter22")], encodings=["JSON-HEX"]) as fake:
        client = make_client(fake, encodings=["JSON-B64"], reconnect=False)
        with pytest.raises(NegotiationFailed) as info:
            client.connect()
    assert not isinstance(info.value, AuthenticationFailed)
    assert "no common encoding" in str(info.value)


def test_nothing_listening(make_client: MakeClient) -> None:
    port = free_port()
    client = HiveMessageBusClient(
        key="k", password="p", host="127.0.0.1", port=port, identity=NodeIdentity({})
    )
    with pytest.raises(HiveMindEntryPointNotFound, match=str(port)):
        client.connect()


def test_silent_server_times_out() -> None:
    """A websocket server that never speaks: ConnectTimeout after connect_timeout."""
    with silent_websocket_server() as port:
        client = HiveMessageBusClient(
            key="k",
            password="p",
            host="127.0.0.1",
            port=port,
            identity=NodeIdentity({}),
            connect_timeout=0.5,
        )
        started = time.monotonic()
        with pytest.raises(ConnectTimeout):
            client.connect()
        assert time.monotonic() - started < 3


def test_emit_before_connect_raises(hub: FakeHub, make_client: MakeClient) -> None:
    client = make_client(hub)
    with pytest.raises(InvalidState):
        client.emit(utterance("too early"))


def test_context_manager(hub: FakeHub, make_client: MakeClient) -> None:
    client = make_client(hub)
    with client as c:
        assert c.connected
    assert not client.connected
    assert eventually(lambda: not hub.links)


# -- identity ----------------------------------------------------------------------


def test_no_argument_construction_reads_identity_file(hub: FakeHub, _isolated_config: Any) -> None:
    ident = NodeIdentity()
    assert ident.path == _isolated_config / "hivemind" / "_identity.json"
    ident.access_key = "sat-key"
    ident.password = "hunter22"
    ident.default_master = "ws://127.0.0.1"
    ident.default_port = hub.port
    ident.site_id = "attic"
    ident.save()
    assert (ident.path.stat().st_mode & 0o777) == 0o600
    client = HiveMessageBusClient()
    try:
        client.connect()
        assert client.site_id == "attic"
        assert eventually(lambda: hub.hellos)[-1]["site_id"] == "attic"
    finally:
        client.close()


def test_missing_identity_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="set-identity"):
        HiveMessageBusClient()


# -- handlers and dispatch ------------------------------------------------------------


def test_handler_may_wait_for_response(hub: FakeHub, make_client: MakeClient) -> None:
    """A handler blocking in wait_for_response must not deadlock the client."""
    client = make_client(hub)
    client.connect()
    results: list[str | None] = []
    done = threading.Event()

    def on_first(message: Message) -> None:
        if message.data["utterance"] != "echo: one":
            return
        reply = client.wait_for_response(utterance("two"), reply_type="speak", timeout=5)
        results.append(reply.payload.data["utterance"] if reply else None)
        done.set()

    client.on_mycroft("speak", on_first)
    client.emit(utterance("one"))
    assert done.wait(10)
    assert results == ["echo: two"]


def test_on_remove_and_hive_handlers(hub: FakeHub, make_client: MakeClient) -> None:
    client = make_client(hub)
    client.connect()
    hive: list[HiveMessage] = []
    ovos: list[Message] = []
    raw: list[str] = []
    client.on(T.BUS, hive.append)
    client.on("speak", ovos.append)
    client.on("message", raw.append)
    client.emit(utterance("a"))
    eventually(lambda: len(hive) == 1 and len(ovos) == 1 and len(raw) == 1)
    assert client.remove("speak", ovos.append)
    client.remove_all_listeners(T.BUS)
    client.emit(utterance("b"))
    eventually(lambda: len(raw) == 2)
    time.sleep(0.1)
    assert len(hive) == 1 and len(ovos) == 1


def test_binary_handlers(hub: FakeHub, make_client: MakeClient) -> None:
    got: list[tuple[bytes, str]] = []

    class Callbacks(BinaryDataCallbacks):
        def handle_receive_tts(
            self, bin_data: bytes, utterance: str, lang: str, file_name: str
        ) -> None:
            got.append((bin_data, utterance))

    client = make_client(hub, bin_callbacks=Callbacks())
    client.connect()
    seen: list[tuple[bytes, dict[str, Any]]] = []
    client.on_bin(T.BINARY, lambda data, ctx: seen.append((data, ctx)))
    hub.send_to_all(
        HiveMessage(
            T.BINARY,
            b"\x00\x01wav",
            bin_type=HiveMindBinaryPayloadType.TTS_AUDIO,
            metadata={"utterance": "hi", "lang": "en"},
        )
    )
    eventually(lambda: got and seen)
    assert got == [(b"\x00\x01wav", "hi")]
    assert seen[0][1]["bin_type"] == HiveMindBinaryPayloadType.TTS_AUDIO


# -- reconnect -----------------------------------------------------------------------


def test_reconnect_after_drop_keeps_handlers_and_session(
    hub: FakeHub, make_client: MakeClient
) -> None:
    client = make_client(hub)
    client.connect()
    first_conn = client.protocol.conn
    heard: list[str] = []
    client.on_mycroft("speak", lambda m: heard.append(m.data["utterance"]))
    session = client.session_id
    started = time.monotonic()
    hub.drop_all(1011)
    eventually(lambda: client.stats["connects"] == 2 and client.connected)
    assert time.monotonic() - started < 2  # first retry well under a second
    assert client.protocol.conn is not first_conn  # fresh connection, fresh keys
    assert client.session_id == session
    client.emit(utterance("back"))
    eventually(lambda: heard == ["echo: back"])


def test_reconnect_after_hub_restart(hub: FakeHub, make_client: MakeClient) -> None:
    client = make_client(hub)
    client.connect()
    hub.stop_listening()
    eventually(lambda: not client.connected)
    time.sleep(0.5)
    hub.restart()
    eventually(lambda: client.connected, timeout=8)
    reply = client.wait_for_response(utterance("up again"), reply_type="speak")
    assert reply is not None


def test_refused_credentials_on_reconnect_are_fatal(hub: FakeHub, make_client: MakeClient) -> None:
    client = make_client(hub)
    client.connect()
    del hub.accounts["sat-key"]
    hub.drop_all(1012)
    eventually(lambda: client.fatal_error is not None)
    assert isinstance(client.fatal_error, UnauthorizedKeyError)
    count = hub.connections
    time.sleep(1.5)
    assert hub.connections == count  # no retry loop against refused credentials
    with pytest.raises(Exception, match="stopped"):
        client.emit(utterance("nobody home"))


def test_keepalive_notices_a_dead_link(hub: FakeHub, make_client: MakeClient) -> None:
    client = make_client(hub, ping_interval=0.2, ping_timeout=0.2)
    client.connect()
    first = client.protocol.conn
    started = time.monotonic()
    hub.freeze_all()  # the hub stops answering anything, pings included
    eventually(lambda: client.protocol.conn is not first and client.connected, timeout=5)
    assert time.monotonic() - started < 3
    assert client.stats["connects"] == 2


def test_reconnect_disabled(hub: FakeHub, make_client: MakeClient) -> None:
    client = make_client(hub, reconnect=False)
    client.connect()
    hub.drop_all(1011)
    eventually(lambda: client.fatal_error is not None)
    assert not client.connected


# -- PING / QUERY / CASCADE / INTERCOM ------------------------------------------------


def test_answers_ping_with_pong(hub: FakeHub, make_client: MakeClient) -> None:
    client = make_client(hub)
    client.connect()
    ping = HiveMessage(T.PING, {"ping_id": "p-1", "peer": "elsewhere", "timestamp": 1.0})
    route = [{"source": "elsewhere", "targets": ["fakehub"]}]
    hub.send_to_all(HiveMessage(T.PROPAGATE, payload=ping, route=route))
    pong = eventually(lambda: hub.of_type(T.PONG))[0]
    assert pong.payload["ping_id"] == "p-1"
    assert pong.payload["peer"] == client.peer
    assert pong.payload["site_id"] == "kitchen"
    assert pong.route == route
    assert client.stats["pings_answered"] == 1


def test_ping_collects_pongs(hub: FakeHub, make_client: MakeClient) -> None:
    client = make_client(hub)
    client.connect()
    pongs = client.ping(timeout=0.5)
    assert [p.payload["peer"] for p in pongs] == ["fakehub"]
    assert not hub.of_type(T.PONG)  # we did not answer our own ping


def test_query_and_cascade(hub: FakeHub, make_client: MakeClient) -> None:
    client = make_client(hub)
    client.connect()
    answer = client.query(utterance("q"), timeout=5)
    assert answer is not None and answer.payload.payload.data["utterance"] == "answer 0: q"
    sent = hub.of_type(T.QUERY)[-1]
    assert sent.payload.payload.context["session"]["session_id"] == client.session_id
    # one query-id format for the whole hive: protocol.cascade.new_query_id's
    assert re.fullmatch("[0-9a-f]{32}", sent.metadata["query_id"]), sent.metadata

    picked: list[int] = []

    def select(responses: list[HiveMessage]) -> HiveMessage:
        picked.append(len(responses))
        return responses[-1]

    client.protocol.cascade_select_callback = select
    selected: list[HiveMessage] = []
    client.on(T.CASCADE, selected.append)
    started = time.monotonic()
    result = client.cascade(utterance("c"), timeout=3, expected=2)
    assert time.monotonic() - started < 2  # resolved early: both answered
    assert result.complete and len(result.responses) == 2
    assert picked == [2]
    assert result.selected is result.responses[-1]
    eventually(lambda: selected)
    assert selected[0].metadata["responder_peer"] == "node-1"


def test_cascade_timeout_window(hub: FakeHub, make_client: MakeClient) -> None:
    client = make_client(hub, cascade_timeout=0.4)
    client.connect()
    started = time.monotonic()
    result = client.cascade(utterance("c"))
    elapsed = time.monotonic() - started
    assert 0.35 < elapsed < 2
    assert not result.complete and len(result.responses) == 2
    assert result.selected is result.responses[0]  # default: first answer


def _intercom_for(client: HiveMessageBusClient, sender: Any, inner: HiveMessage) -> HiveMessage:
    pub = client.protocol.public_key_pem
    sealed = crypto.hybrid_encrypt(inner.serialize().encode(), crypto.load_public_key(pub), sender)
    return HiveMessage(T.INTERCOM, payload=sealed, target_pubkey=pub)


def test_intercom_trusted_and_untrusted(
    hub: FakeHub, make_client: MakeClient, identity: NodeIdentity, tmp_path: Any
) -> None:
    identity.create_keys(tmp_path / "me.pem")
    friend, stranger = crypto.create_private_key(), crypto.create_private_key()
    identity.add_trusted_key("friend", crypto.public_key_pem(friend))
    client = make_client(hub)
    client.connect()
    spoken: list[str] = []
    opened: list[HiveMessage] = []
    client.on_mycroft("speak", lambda m: spoken.append(m.data["utterance"]))
    client.on(T.INTERCOM, opened.append)
    inner = HiveMessage(T.BUS, Message("speak", {"utterance": "secret"}))
    hub.send_to_all(_intercom_for(client, stranger, inner))
    eventually(lambda: client.stats["intercom_dropped"] == 1)
    hub.send_to_all(_intercom_for(client, friend, inner))
    eventually(lambda: spoken == ["secret"])
    eventually(lambda: len(opened) == 2)
    assert [o.payload["trusted"] for o in opened] == [False, True]
    assert opened[1].payload["sender_alias"] == "friend"
    # for another node: ignored entirely
    other = crypto.public_key_pem(crypto.create_private_key())
    hub.send_to_all(HiveMessage(T.INTERCOM, payload={"encrypted_key": "x"}, target_pubkey=other))
    time.sleep(0.2)
    assert len(opened) == 2 and client.stats["intercom_opened"] == 2


def test_emit_intercom_sends_only_ciphertext(hub: FakeHub, make_client: MakeClient) -> None:
    client = make_client(hub)
    client.connect()
    target = crypto.create_private_key()
    client.emit_intercom(utterance("for your eyes"), crypto.public_key_pem(target))
    sent = eventually(lambda: hub.of_type(T.INTERCOM))[0]
    assert "for your eyes" not in sent.serialize()
    plain = crypto.hybrid_decrypt(sent.payload, target)
    assert HiveMessage.deserialize(plain.decode()).payload.data["utterances"] == ["for your eyes"]


def test_with_hivemind_decorator(hub: FakeHub, identity: NodeIdentity) -> None:
    from hivemind_bus_client.decorators import with_hivemind

    seen: list[bool] = []

    @with_hivemind(
        key="sat-key", password="hunter22", host="127.0.0.1", port=hub.port, identity=identity
    )
    def service(client: HiveMessageBusClient, word: str) -> str | None:
        seen.append(client.connected)
        reply = client.wait_for_response(utterance(word), reply_type="speak")
        return reply.payload.data["utterance"] if reply else None

    assert service("deco") == "echo: deco"
    assert seen == [True]
    eventually(lambda: not hub.links)


def test_connect_again_after_close(hub: FakeHub, make_client: MakeClient) -> None:
    client = make_client(hub)
    client.connect()
    session = client.session_id
    client.close()
    assert not client.connected
    client.connect()
    reply = client.wait_for_response(utterance("second life"), reply_type="speak")
    assert reply is not None and reply.payload.data["utterance"] == "echo: second life"
    assert client.session_id == session and client.stats["connects"] == 2


@pytest.mark.parametrize(
    "frame",
    ["not json at all", '{"ciphertext": "@@", "nonce": "zz"}', b"\x00\xff\x13garbage", "[1, 2, 3]"],
)
def test_malformed_frame_from_the_hub_drops_the_link_and_recovers(
    hub: FakeHub, make_client: MakeClient, frame: str | bytes
) -> None:
    client = make_client(hub)
    client.connect()
    first_conn = client.protocol.conn
    hub.send_raw_to_all(frame)
    # the link that carried the bad frame is closed and replaced; the client keeps working
    eventually(lambda: client.protocol.conn is not first_conn and client.connected, timeout=8)
    assert client.fatal_error is None
    reply = client.wait_for_response(utterance("still here"), reply_type="speak")
    assert reply is not None and reply.payload.data["utterance"] == "echo: still here"


def test_a_pong_handler_registered_just_after_gets_the_pong_that_came_first(
    hub: FakeHub, make_client: MakeClient
) -> None:
    client = make_client(hub)
    client.connect()
    pong = HiveMessage(T.PONG, {"flood_id": "f-1", "peer": "far-node", "hops": 2})
    hub.send_to_all(pong)
    eventually(lambda: client.stats["messages_in"] >= 1 and client._registry._unheard)
    got: list[HiveMessage] = []
    client.on(T.PONG, got.append)
    eventually(lambda: got)
    assert [p.payload["peer"] for p in got] == ["far-node"]
    # handed over once: a second handler does not get it again, later PONGs go live
    again: list[HiveMessage] = []
    client.on(T.PONG, again.append)
    hub.send_to_all(HiveMessage(T.PONG, {"flood_id": "f-2", "peer": "near-node", "hops": 1}))
    eventually(lambda: len(again) == 1 and len(got) == 2)
    assert again[0].payload["peer"] == "near-node"


def test_an_unheard_pong_expires(
    hub: FakeHub, make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hivemind_bus_client.client import handlers

    monkeypatch.setattr(handlers, "UNHEARD_PONG_WINDOW", 0.05)
    client = make_client(hub)
    client.connect()
    hub.send_to_all(HiveMessage(T.PONG, {"flood_id": "f-3", "peer": "old-node", "hops": 1}))
    eventually(lambda: client._registry._unheard)
    time.sleep(0.1)
    got: list[HiveMessage] = []
    client.on(T.PONG, got.append)
    time.sleep(0.2)
    assert got == []
