"""Every Python sample of the seed docs, run unchanged against a local hub.

The samples are cut out of ``../shared/seed-docs`` at test time (between an
anchor line and an end line, verbatim), so a sample that changes upstream is
tested as it now reads. Only the address and the credentials are patched in
(``192.168.1.10``/``localhost`` and port ``5678`` become the local hub, the
placeholder key and password become a registered client's). Samples that use
a name defined by an earlier sample (``client``, ``proto``, ``mapper``) get a
prelude defining it; what the sample prints is asserted by an epilogue or by
the test.

The hub is ours, started as a user starts it: ``hivemind-core add-client``
then ``hivemind-core listen``, with XDG dirs in a temp dir.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from support.net import free_port

SEED_DIR = Path(
    os.environ.get(
        "HIVEMIND_SEED_DOCS", Path(__file__).resolve().parents[2].parent / "shared" / "seed-docs"
    )
)
#: The extracted samples (code only), for checkouts without the seed docs beside
#: them; ``test_committed_samples_match_the_docs`` keeps it equal to the docs.
SAMPLES_FILE = Path(__file__).with_name("samples.json")
KEY = "seed-sample-key"
PASSWORD = "seed-sample-password"


def doc(prefix: str) -> str:
    """The text of the seed doc whose file name starts with ``prefix``."""
    (path,) = SEED_DIR.glob(f"{prefix}_*.txt")
    return path.read_text(encoding="utf-8")


def _sample_id(prefix: str, first: str, last: str, occurrence: int) -> str:
    return f"{prefix}|{first}|{last}|{occurrence}"


def extract(prefix: str, first: str, last: str, occurrence: int = 0) -> str:
    """The lines of a seed doc from the line starting with ``first`` to the next
    line starting with ``last`` (both included), verbatim."""
    if not SEED_DIR.is_dir():
        return json.loads(SAMPLES_FILE.read_text(encoding="utf-8"))[
            _sample_id(prefix, first, last, occurrence)
        ]
    lines = doc(prefix).splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith(first)]
    assert len(starts) > occurrence, f"{first!r} not in seed doc {prefix}"
    start = starts[occurrence]
    for end in range(start, len(lines)):
        if lines[end].startswith(last):
            return "\n".join(lines[start : end + 1]) + "\n"
    raise AssertionError(f"{last!r} does not follow {first!r} in seed doc {prefix}")


@dataclass
class Hub:
    port: int
    env: dict[str, str]
    root: Path
    http_port: int = 0


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _bin(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    root = tmp_path_factory.mktemp("seedhub")
    env = dict(os.environ)
    env.update(
        XDG_CONFIG_HOME=str(root / "config"),
        XDG_DATA_HOME=str(root / "data"),
        XDG_STATE_HOME=str(root / "state"),
        XDG_CACHE_HOME=str(root / "cache"),
        PYTHONUNBUFFERED="1",
        # the hub imports the binary handler of test_custom_binary_handler from here
        PYTHONPATH=os.pathsep.join(
            p for p in (str(Path(__file__).parent), os.environ.get("PYTHONPATH")) if p
        ),
    )
    port = free_port()
    http_port = free_port()
    run = dict(env=env, check=True, capture_output=True, text=True, timeout=60)
    subprocess.run(
        [
            _bin("hivemind-core"),
            "add-client",
            "--access-key",
            KEY,
            "--password",
            PASSWORD,
            "--admin",
            "true",
        ],
        **run,
    )
    subprocess.run([_bin("hivemind-core"), "allow-broadcast", "1"], **run)
    server_json = root / "config" / "hivemind-core" / "server.json"
    settings = json.loads(server_json.read_text()) if server_json.exists() else {}
    settings["binary_handler"] = "echo_binary:EchoBinaryHandler"
    server_json.parent.mkdir(parents=True, exist_ok=True)
    server_json.write_text(json.dumps(settings))
    subprocess.run(
        [
            _bin("hivemind-client"),
            "set-identity",
            "--key",
            KEY,
            "--password",
            PASSWORD,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--siteid",
            "living-room",
        ],
        **run,
    )
    log = open(root / "hub.log", "w")
    proc = subprocess.Popen(
        [
            _bin("hivemind-core"),
            "listen",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--http-port",
            str(http_port),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            if all(_listening(p) for p in (port, http_port)):
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("hub did not start:\n" + (root / "hub.log").read_text())
            time.sleep(0.05)
        yield Hub(port, env, root, http_port)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def patch(sample: str, hub: Hub) -> str:
    """Point a sample at the local hub; nothing else of its text changes."""
    return (
        sample.replace("192.168.1.10", "127.0.0.1")
        .replace("ws://localhost", "ws://127.0.0.1")
        .replace("port=5678", f"port={hub.port}")
        .replace('"my-access-key"', repr(KEY))
        .replace('"my-key"', repr(KEY))
        .replace('"my-password"', repr(PASSWORD))
    )


CLIENT_PRELUDE = """
from hivemind_bus_client.client import HiveMessageBusClient
client = HiveMessageBusClient()
client.connect()
"""

WAIT_FOR = """
import sys, time
def wait_printed(flag, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if flag():
            return
        time.sleep(0.02)
    print("TIMEOUT", file=sys.stderr)
    sys.exit(3)
"""


def run_script(hub: Hub, code: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-c", code], env=hub.env, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, f"sample failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc


def printed_by(name: str) -> str:
    """Prelude code that records what ``print`` shows, so an epilogue can wait on it."""
    return textwrap.dedent(
        f"""
        import builtins
        {name} = []
        _print = builtins.print
        def print(*args, **kwargs):
            {name}.append(" ".join(str(a) for a in args))
            _print(*args, **kwargs, flush=True)
        """
    )


# -- 000: developer guide ------------------------------------------------------


def test_basic_connection_from_identity_file(hub: Hub) -> None:
    sample = extract(
        "000", "from hivemind_bus_client.client import HiveMessageBusClient", "client.connect()"
    )
    out = run_script(hub, patch(sample, hub) + "print('PEER', client.peer)\nclient.close()\n")
    assert "PEER HiveMessageBusClientV0.0.1::" in out.stdout


def test_basic_connection_with_explicit_parameters(hub: Hub) -> None:
    sample = extract("000", "client = HiveMessageBusClient(", "client.connect()")
    code = "from hivemind_bus_client.client import HiveMessageBusClient\n" + patch(sample, hub)
    out = run_script(hub, code + "print('SITE', client.site_id)\nclient.close()\n")
    assert "SITE" in out.stdout


def test_http_client_sample(hub: Hub) -> None:
    sample = extract(
        "000", "from hivemind_bus_client.http_client import HiveMindHTTPClient", "client.connect()"
    )
    assert 'HiveMindHTTPClient(host="http://192.168.1.10", port=5679)' in sample
    code = sample.replace("192.168.1.10", "127.0.0.1").replace("5679", str(hub.http_port))
    epilogue = textwrap.dedent(
        """
        from ovos_bus_client.message import Message
        answer = client.wait_for_response(
            Message("recognizer_loop:utterance", {"utterances": ["echo over http"]}),
            reply_type="speak", timeout=10)
        print("SPOKE:", answer.payload.data["utterance"], "SITE:", client.site_id)
        client.close()
        """
    )
    out = run_script(hub, code + epilogue)
    assert "SPOKE: over http SITE: living-room" in out.stdout


def test_sending_utterances_and_handling_responses(hub: Hub) -> None:
    handling = extract(
        "000", "def handle_speak(message):", 'client.on_mycroft("speak", handle_speak)'
    )
    sending = extract("000", "from ovos_bus_client.message import Message", "client.emit(msg)")
    code = (
        CLIENT_PRELUDE
        + printed_by("lines")
        + WAIT_FOR
        + patch(handling, hub)
        + patch(sending, hub)
        + "wait_printed(lambda: any(l.startswith('AI says:') for l in lines))\nclient.close()\n"
    )
    out = run_script(hub, code)
    assert "AI says: It is" in out.stdout  # the embedded agent tells the time


def test_conversational_loop(hub: Hub) -> None:
    sample = extract(
        "000", "from hivemind_bus_client.client import HiveMessageBusClient", "client.close()", 1
    )
    proc = subprocess.Popen(
        [sys.executable, "-u", "-c", patch(sample, hub)],
        env=hub.env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write("what time is it\n")
    proc.stdin.flush()
    got = ""
    deadline = time.monotonic() + 15
    while "Response:" not in got and time.monotonic() < deadline:
        got += os.read(proc.stdout.fileno(), 4096).decode()
    proc.send_signal(signal.SIGINT)  # the sample's loop ends on KeyboardInterrupt
    rest, err = proc.communicate(timeout=15)
    assert "Response: It is" in got + rest, err
    assert proc.returncode == 0, err


def test_sending_binary_data(hub: Hub) -> None:
    sample = extract(
        "000", 'audio_bytes = b"..."', "client.emit(HiveMessage(HiveMessageType.BINARY"
    )
    code = (
        CLIENT_PRELUDE
        + "from hivemind_bus_client.message import HiveMessage, HiveMessageType\n"
        + patch(sample, hub)
        # the link survives the binary frame: an utterance still gets its answer
        + "from ovos_bus_client.message import Message\n"
        + "r = client.wait_for_response(Message('recognizer_loop:utterance', "
        "{'utterances': ['what time is it']}), 'speak', timeout=10)\n"
        + "print('ANSWER', r.payload.data['utterance'] if r else None)\nclient.close()\n"
    )
    assert "ANSWER It is" in run_script(hub, code).stdout


def test_custom_binary_handler(hub: Hub) -> None:
    """The handler the sample registers runs on a BINARY message from the hub.

    The hub's binary handler (``echo_binary``) sends a marked BINARY back; the
    sample's ``handle_audio_bin`` does nothing visible (``pass``), so a profile
    hook set before the client's threads start records each call of it.
    """
    sample = extract(
        "000", "from hivemind_bus_client.message import HiveMessageType", "client.on_bin("
    )
    assert "def handle_audio_bin(data: bytes, context: dict) -> None:" in sample
    spy = textwrap.dedent(
        """
        import sys, threading
        handled = []
        def _spy(frame, event, arg):
            code = frame.f_code
            if event == "call" and code.co_name == "handle_audio_bin" and code.co_filename == "<string>":
                handled.append((frame.f_locals["data"], dict(frame.f_locals["context"])))
        threading.setprofile(_spy)
        sys.setprofile(_spy)
        """
    )
    epilogue = textwrap.dedent(
        """
        from hivemind_bus_client.message import HiveMessage, HiveMindBinaryPayloadType
        client.emit(HiveMessage(HiveMessageType.BINARY, b"seed-binary-probe",
                                bin_type=HiveMindBinaryPayloadType.RAW_AUDIO,
                                metadata={"echo": True}))
        wait_printed(lambda: handled)
        data, context = handled[0]
        print("HANDLED", data, context.get("bin_type"), context.get("echoed"), len(handled))
        client.close()
        """
    )
    code = spy + WAIT_FOR + CLIENT_PRELUDE + patch(sample, hub) + epilogue
    out = run_script(hub, code)
    assert "HANDLED b'seed-binary-probe' 1 True 1" in out.stdout, out.stdout


def test_decorator_helper(hub: Hub) -> None:
    sample = extract(
        "000", "from hivemind_bus_client.decorators import with_hivemind", "    # connection is"
    )
    code = "from hivemind_bus_client.client import HiveMessageBusClient\n" + patch(sample, hub)
    code += "print('DECORATED', callable(my_service))\n"
    assert "DECORATED True" in run_script(hub, code).stdout


def test_topology_ping_pong(hub: Hub) -> None:
    sample = extract("000", "import uuid, time", "client.on(HiveMessageType.PONG, on_pong)")
    code = (
        CLIENT_PRELUDE
        + printed_by("lines")
        + WAIT_FOR
        + patch(sample, hub)
        + "wait_printed(lambda: any(l.startswith('PONG from') for l in lines), timeout=2)\n"
        + "client.close()\n"
    )
    # The sample registers its PONG handler after it emits the PING; on loopback the
    # hub's PONG often arrives first. The client keeps such unheard PONGs for the
    # handler registered just after, so every run must hear it: run it several times.
    for _ in range(5):
        proc = run_script(hub, code)
        assert "PONG from" in proc.stdout and "hops" in proc.stdout


# -- 001: package page ---------------------------------------------------------


def test_quick_start(hub: Hub) -> None:
    sample = extract(
        "001",
        "from hivemind_bus_client import HiveMessageBusClient",
        '                                {"utterances": ["hello world"]})))',
    )
    code = printed_by("lines") + WAIT_FOR + patch(sample, hub)
    code += "wait_printed(lambda: bool(lines))\nclient.close()\n"
    out = run_script(hub, code)
    assert out.stdout.strip()  # the agent's answer to "hello world"


def test_trusted_keys(hub: Hub) -> None:
    sample = extract(
        "001", "from hivemind_bus_client.identity import NodeIdentity", "identity.save()"
    )
    run_script(hub, sample)
    check = (
        "from hivemind_bus_client.identity import NodeIdentity\n"
        "print('TRUSTED', NodeIdentity().trusted_keys)\n"
    )
    assert "living-room-hub" in run_script(hub, check).stdout


def test_cascade_response_aggregation(hub: Hub) -> None:
    sample = extract("001", "proto.cascade_select_callback", "proto.hive_mapper = mapper")
    code = (
        CLIENT_PRELUDE
        + "from hivemind_core.hive_map import HiveMapper\n"
        + "proto = client.protocol\nmapper = HiveMapper()\n"
        + sample
        + "from ovos_bus_client.message import Message\n"
        + "result = client.cascade(Message('recognizer_loop:utterance', "
        "{'utterances': ['what time is it']}), timeout=3)\n"
        + "print('SELECTED', result.selected is not None and result.selected is result.responses[0])\n"
        + "client.close()\n"
    )
    assert "SELECTED True" in run_script(hub, code).stdout


@pytest.mark.skipif(not SEED_DIR.is_dir(), reason="seed docs are not beside the repo")
def test_committed_samples_match_the_docs() -> None:
    stored = json.loads(SAMPLES_FILE.read_text(encoding="utf-8"))
    for sample_id, text in stored.items():
        prefix, first, last, occurrence = sample_id.split("|")
        assert extract(prefix, first, last, int(occurrence)) == text, sample_id


if __name__ == "__main__":  # regenerate samples.json from the seed docs
    import ast
    import inspect

    calls = [
        node
        for node in ast.walk(ast.parse(inspect.getsource(sys.modules[__name__])))
        if isinstance(node, ast.Call)
        and getattr(node.func, "id", None) == "extract"
        and all(isinstance(a, ast.Constant) for a in node.args)
    ]
    out = {}
    for call in calls:
        args = [a.value for a in call.args]
        if len(args) == 3:
            args.append(0)
        out[_sample_id(*args)] = extract(*args)
    SAMPLES_FILE.write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {len(out)} samples to {SAMPLES_FILE.name}")
