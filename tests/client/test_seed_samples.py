"""The Python samples of the seed docs, run unchanged against a local hub.

Each sample is copied verbatim from the seed document named next to it. Only
the hub address is patched in (``192.168.1.10`` / ``localhost`` / ``5678`` →
the fake hub's loopback port), and where a sample is a fragment that relies
on an earlier one (``client`` already connected) the earlier sample is put in
front, as a reader following the guide would. Each script runs in a
subprocess whose identity file points at the fake hub; the test asserts on
what the script prints and on what the hub received.

Not covered: the ``HiveMindHTTPClient`` sample (HTTP transport, not part of
the websocket client) and calling the ``with_hivemind`` sample function (its
body is ``client.emit(...)``, an ellipsis placeholder); the decorated
function is still defined and checked to be callable.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hivemind_bus_client.identity import NodeIdentity
from hivemind_bus_client.message import HiveMessageType

from .fakehub import Account, FakeHub

# -- seed doc 000 (developer guide) -------------------------------------------------

BASIC = '''
from hivemind_bus_client.client import HiveMessageBusClient

# Reads host, port, key, password from ~/.config/hivemind/_identity.json
client = HiveMessageBusClient()
client.connect()
'''

EXPLICIT = '''
client = HiveMessageBusClient(
    host="192.168.1.10",
    port=5678,
    key="my-access-key",
    password="my-password"
)
client.connect()
'''

SENDING = '''
from ovos_bus_client.message import Message
from hivemind_bus_client.message import HiveMessage, HiveMessageType

utt = "What time is it?"
msg = HiveMessage(
    HiveMessageType.BUS,
    Message("recognizer_loop:utterance", {"utterances": [utt]})
)
client.emit(msg)
'''

HANDLING = '''
def handle_speak(message):
    print(f"AI says: {message.data['utterance']}")

client.on_mycroft("speak", handle_speak)
'''

LOOP = '''
from hivemind_bus_client.client import HiveMessageBusClient
from ovos_bus_client.message import Message
from hivemind_bus_client.message import HiveMessage, HiveMessageType

client = HiveMessageBusClient()
client.connect()

def on_speak(msg):
    print(f"Response: {msg.data['utterance']}")

client.on_mycroft("speak", on_speak)

while True:
    try:
        utterance = input("You: ").strip()
        if utterance:
            client.emit(HiveMessage(
                HiveMessageType.BUS,
                Message("recognizer_loop:utterance", {"utterances": [utterance]})
            ))
    except KeyboardInterrupt:
        break

client.close()
'''

BINARY = '''
audio_bytes = b"..."  # Raw PCM data
client.emit(HiveMessage(HiveMessageType.BINARY, audio_bytes))
'''

BIN_HANDLER = '''
from hivemind_bus_client.message import HiveMessageType

def handle_audio_bin(data: bytes, context: dict) -> None:
    # Process raw audio bytes
    pass

client.on_bin(HiveMessageType.BINARY, handle_audio_bin)
'''

DECORATOR = '''
from hivemind_bus_client.decorators import with_hivemind

@with_hivemind
def my_service(client: HiveMessageBusClient):
    client.emit(...)
    # connection is cleaned up automatically when the function returns
'''

PING = '''
import uuid, time
from hivemind_bus_client.message import HiveMessage, HiveMessageType

ping_id = str(uuid.uuid4())
ping_inner = HiveMessage(
    HiveMessageType.PING,
    payload={
        "ping_id": ping_id,
        "timestamp": time.time(),
        "peer": client.peer,
        "site_id": client.site_id,
    }
)
# PING must always be wrapped in PROPAGATE
ping_outer = HiveMessage(HiveMessageType.PROPAGATE, payload=ping_inner)
client.emit(ping_outer)

def on_pong(message):
    payload = message.payload
    route = message.route  # List[{source, targets}]
    print(f"PONG from {payload['peer']} via {len(route)} hops")

client.on(HiveMessageType.PONG, on_pong)
'''

# -- seed doc 001 (package page) ----------------------------------------------------------

QUICK_START = '''
from hivemind_bus_client import HiveMessageBusClient
from hivemind_bus_client.message import HiveMessage, HiveMessageType
from ovos_bus_client.message import Message

client = HiveMessageBusClient(host="ws://localhost", port=5678)
client.connect()

client.on_mycroft("speak", lambda msg: print(msg.data["utterance"]))

client.emit(HiveMessage(HiveMessageType.BUS,
                        Message("recognizer_loop:utterance",
                                {"utterances": ["hello world"]})))
'''

TRUSTED = '''
from hivemind_bus_client.identity import NodeIdentity

identity = NodeIdentity()
identity.add_trusted_key("living-room-hub", "<RSA_PUBLIC_KEY>")
identity.save()
'''

CASCADE = '''
proto.cascade_select_callback = lambda responses: responses[0]  # pick best
proto.hive_mapper = mapper  # enables early resolution when all nodes answered
'''

SETTLE = "\nimport time as _t\n_t.sleep(1.5)\nprint('== done')\n"


def patch_address(code: str, port: int) -> str:
    return (
        code.replace("192.168.1.10", "127.0.0.1")
        .replace("ws://localhost", "ws://127.0.0.1")
        .replace("5678", str(port))
    )


@pytest.fixture
def seed_hub() -> FakeHub:
    with FakeHub([Account("sat-key", "hunter22"), Account("my-access-key", "my-password")]) as hub:
        yield hub


@pytest.fixture
def config(tmp_path: Path, seed_hub: FakeHub) -> Path:
    """An identity file pointing at the fake hub, as ``set-identity`` would write it."""
    cfg = tmp_path / "cfg"
    ident = NodeIdentity(cfg / "hivemind" / "_identity.json")
    ident.access_key = "sat-key"
    ident.password = "hunter22"
    ident.default_master = "ws://127.0.0.1"
    ident.default_port = seed_hub.port
    ident.site_id = "living-room"
    ident.save()
    return cfg


def run_sample(code: str, config: Path, port: int, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "HIVEMIND_"))}
    env["XDG_CONFIG_HOME"] = str(config)
    env["HOME"] = str(config.parent)
    return subprocess.run(
        [sys.executable, "-c", patch_address(code, port)],
        capture_output=True, text=True, env=env, timeout=timeout,
    )


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.stdout


def test_basic_send_and_handle(seed_hub: FakeHub, config: Path) -> None:
    out = ok(run_sample(BASIC + HANDLING + SENDING + SETTLE, config, seed_hub.port))
    assert "AI says: echo: What time is it?" in out
    assert seed_hub.hellos[-1]["site_id"] == "living-room"


def test_explicit_parameters(seed_hub: FakeHub, config: Path) -> None:
    code = "from hivemind_bus_client.client import HiveMessageBusClient\n" + EXPLICIT
    out = ok(run_sample(code + HANDLING + SENDING + SETTLE, config, seed_hub.port))
    assert "AI says: echo: What time is it?" in out


def test_binary_and_bin_handler(seed_hub: FakeHub, config: Path) -> None:
    code = BASIC + SENDING + BIN_HANDLER + BINARY + SETTLE
    ok(run_sample(code, config, seed_hub.port))
    binaries = seed_hub.of_type(HiveMessageType.BINARY)
    assert binaries and binaries[0].payload == b"..."


def test_decorator_sample_defines_a_callable(seed_hub: FakeHub, config: Path) -> None:
    code = "from hivemind_bus_client.client import HiveMessageBusClient\n" + DECORATOR
    out = ok(run_sample(code + "print(callable(my_service), my_service.__name__)", config,
                        seed_hub.port))
    assert "True my_service" in out


def test_ping_pong(seed_hub: FakeHub, config: Path) -> None:
    out = ok(run_sample(BASIC + PING + SETTLE, config, seed_hub.port))
    assert "PONG from fakehub via 1 hops" in out
    ping = seed_hub.of_type(HiveMessageType.PROPAGATE)[-1].payload
    assert ping.msg_type is HiveMessageType.PING and ping.payload["peer"]


def test_quick_start(seed_hub: FakeHub, config: Path) -> None:
    out = ok(run_sample(QUICK_START + SETTLE, config, seed_hub.port))
    assert "echo: hello world" in out


def test_trusted_keys(seed_hub: FakeHub, config: Path) -> None:
    ok(run_sample(TRUSTED, config, seed_hub.port))
    ident = NodeIdentity(config / "hivemind" / "_identity.json")
    assert ident.trusted_keys == {"living-room-hub": "<RSA_PUBLIC_KEY>"}
    assert ident.access_key == "sat-key"  # the rest of the file is kept


def test_cascade_settings(seed_hub: FakeHub, config: Path) -> None:
    prelude = BASIC + (
        "\nproto = client.protocol\n"
        "class _Mapper:\n    nodes = ['node-0', 'node-1']\n"
        "mapper = _Mapper()\n"
    )
    probe = (
        "\nimport time as _t\nfrom ovos_bus_client.message import Message as _M\n"
        "_s = _t.monotonic()\n"
        "r = client.cascade(_M('recognizer_loop:utterance', {'utterances': ['c']}), timeout=5)\n"
        "print('answers', len(r.responses), 'early', _t.monotonic() - _s < 3,"
        " 'picked', r.selected.metadata['responder_peer'])\n"
    )
    out = ok(run_sample(prelude + CASCADE + probe, config, seed_hub.port))
    assert "answers 2 early True picked node-0" in out


def test_conversational_loop(seed_hub: FakeHub, config: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "HIVEMIND_"))}
    env["XDG_CONFIG_HOME"] = str(config)
    env["HOME"] = str(config.parent)
    env["PYTHONUNBUFFERED"] = "1"
    proc = subprocess.Popen(
        [sys.executable, "-c", LOOP], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write("hello there\n")
        proc.stdin.flush()
        deadline = time.monotonic() + 30
        seen = ""
        while time.monotonic() < deadline and "Response:" not in seen:
            seen += proc.stdout.readline()
        assert "Response: echo: hello there" in seen
        proc.send_signal(signal.SIGINT)  # the sample's way out
        _, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
