"""Process harness for interop tests and benchmarks (stdlib only).

Starts the reference pieces as subprocesses of the cached reference venv
(``tests/refenv.py``): a real ``ovos-messagebus``, an echo responder on that
bus, the reference hub (``hivemind-core listen`` 4.0.0) and the stock client
(``HiveMessageBusClient`` 0.4.4). Every process runs in its own session (process
group) with throwaway HOME/XDG folders, writes its output to a log file, and is
killed on exit. Loopback only.

Usable without pytest: add ``tests/`` to ``sys.path`` and ``from interop import
harness`` (or put ``tests/interop`` on the path and ``import harness``).
"""

from __future__ import annotations

import base64
import contextlib
import importlib.util
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

INTEROP_DIR = Path(__file__).resolve().parent
TESTS_DIR = INTEROP_DIR.parent
if str(TESTS_DIR) not in sys.path:  # also usable with only tests/interop on the path
    sys.path.insert(0, str(TESTS_DIR))

from support import net  # noqa: E402
from support.net import LOOPBACK, free_port  # noqa: E402

RESPONDER_SCRIPT = INTEROP_DIR / "_responder.py"
HUB_SETUP_SCRIPT = INTEROP_DIR / "_refhub_setup.py"
CLIENT_SCRIPT = INTEROP_DIR / "_refclient.py"

#: Environment variables that could leak the user's OVOS/HiveMind setup into a child.
_SCRUBBED_PREFIXES = ("OVOS_", "MYCROFT_", "XDG_", "PYTHON", "VIRTUAL_ENV", "HIVEMIND_")


class HarnessError(RuntimeError):
    """A reference process failed to start or misbehaved (message includes logs)."""


# --------------------------------------------------------------------------- venv


def ref_python(log: TextIO | None = None) -> Path:
    """Interpreter of the reference venv, building it on first use.

    Raises ``RuntimeError`` (with pip's output) when the build fails.
    """
    spec = importlib.util.spec_from_file_location("_hivemind_refenv", TESTS_DIR / "refenv.py")
    if spec is None or spec.loader is None:
        raise HarnessError(f"cannot load {TESTS_DIR / 'refenv.py'}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return Path(module.ensure(log=log))


def ref_bin(refpython: Path, name: str) -> Path:
    """A console script installed in the reference venv."""
    path = Path(refpython).parent / name
    if not path.exists():
        raise HarnessError(f"{name} is not installed in the reference venv ({path})")
    return path


# --------------------------------------------------------------------------- sockets


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def probe_hub(host: str, port: int, timeout: float = 5.0) -> tuple[str, bytes]:
    """Open a websocket to a hub with an unregistered key.

    Returns the HTTP status line and the first bytes after the upgrade (a hub
    4.0.0 answers ``101`` and then sends a close frame ``88 00``).
    """
    auth = base64.b64encode(b"harness-probe:not-a-registered-key").decode()
    ws_key = base64.b64encode(secrets.token_bytes(16)).decode()
    request = (
        f"GET /?authorization={auth} HTTP/1.1\r\n"
        f"Host: {host}:{port}\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {ws_key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(request.encode())
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(4096)
            if not chunk:
                break
            buf += chunk
        head, _, rest = buf.partition(b"\r\n\r\n")
        status = head.split(b"\r\n", 1)[0].decode("latin-1")
        if " 101 " in status + " " and not rest:
            with contextlib.suppress(OSError):
                rest = sock.recv(64)
        return status, rest


# --------------------------------------------------------------------------- processes


def isolated_env(root: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Child environment whose HOME and XDG folders all live under ``root``."""
    root = Path(root)
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUBBED_PREFIXES)}
    dirs = {
        "HOME": root / "home",
        "XDG_CONFIG_HOME": root / "config",
        "XDG_DATA_HOME": root / "data",
        "XDG_STATE_HOME": root / "state",
        "XDG_CACHE_HOME": root / "cache",
        "XDG_CONFIG_DIRS": root / "etc-xdg",
    }
    for path in dirs.values():
        path.mkdir(parents=True, exist_ok=True)
    env.update({k: str(v) for k, v in dirs.items()})
    # ovos-config also reads /etc/mycroft and /usr/share/mycroft: point both at nothing.
    env["MYCROFT_SYSTEM_CONFIG"] = str(root / "etc-xdg" / "no-system-mycroft.conf")
    env["OVOS_DISTRIBUTION_CONFIG"] = str(root / "etc-xdg" / "no-distribution-mycroft.conf")
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    if extra:
        env.update(extra)
    return env


@dataclass
class ManagedProcess:
    """A child process running in its own process group, output in ``log_path``."""

    name: str
    argv: list[str]
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        """Process id (also the process-group id)."""
        return self.popen.pid

    def alive(self) -> bool:
        """True while the process runs."""
        return self.popen.poll() is None

    def stop(self, grace: float = 3.0) -> None:
        """SIGTERM the whole process group, SIGKILL it after ``grace`` seconds."""
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, sig)
            try:
                self.popen.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                continue
            # the leader is gone; make sure no straggler of the group survives
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)
            return

    def log(self, limit: int = 20000) -> str:
        """The tail of the process's log."""
        return read_tail(self.log_path, limit)


def start_process(
    name: str,
    argv: Sequence[str | os.PathLike[str]],
    *,
    env: dict[str, str],
    log_path: Path,
    cwd: Path | None = None,
) -> ManagedProcess:
    """Start ``argv`` in a new session with stdout+stderr appended to ``log_path``."""
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    args = [str(a) for a in argv]
    with log_path.open("ab") as fh:
        fh.write(f"$ {' '.join(args)}\n".encode())
        fh.flush()
        popen = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=str(cwd) if cwd else None,
            start_new_session=True,
        )
    return ManagedProcess(name=name, argv=args, popen=popen, log_path=log_path)


def read_tail(path: Path, limit: int = 20000) -> str:
    """Last ``limit`` characters of a text file ('' if missing)."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return text if len(text) <= limit else "[...]\n" + text[-limit:]


def format_logs(paths: Iterable[Path], limit: int = 20000) -> str:
    """All given log files, each under a banner."""
    parts = []
    for path in paths:
        parts.append(f"===== {path} =====\n{read_tail(path, limit)}")
    return "\n".join(parts)


def dump_logs(paths: Iterable[Path], out: TextIO | None = None, limit: int = 20000) -> None:
    """Print log files (for failed tests)."""
    print(format_logs(paths, limit), file=out or sys.stderr, flush=True)


def _state_logs(root: Path) -> list[Path]:
    """Log files the OVOS/HiveMind loggers wrote under an isolated XDG_STATE_HOME."""
    state = Path(root) / "state"
    return sorted(state.rglob("*.log")) if state.exists() else []


def wait_until(
    check: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    procs: Sequence[ManagedProcess] = (),
    interval: float = 0.05,
) -> float:
    """Poll ``check`` until true; fail early if a watched process dies.

    Returns the seconds waited. Raises ``HarnessError`` with the logs attached.
    """

    # support.net.wait_until does the polling; this variant adds what a harness
    # needs: give up at once when a watched process died, and attach its logs.
    def ready() -> bool:
        if check():
            return True
        for proc in procs:
            if not proc.alive():
                raise HarnessError(
                    f"{proc.name} exited (rc={proc.popen.returncode}) while waiting for {what}\n"
                    + format_logs([p.log_path for p in procs])
                )
        return False

    try:
        return net.wait_until(ready, timeout=timeout, what=what, interval=interval)
    except AssertionError as exc:
        raise HarnessError(f"{exc}\n" + format_logs([p.log_path for p in procs])) from None


# --------------------------------------------------------------------------- OVOS bus


def write_mycroft_conf(config_home: Path, host: str, port: int, route: str) -> Path:
    """Write ``<config_home>/mycroft/mycroft.conf`` pointing the bus at host:port/route."""
    path = Path(config_home) / "mycroft" / "mycroft.conf"
    path.parent.mkdir(parents=True, exist_ok=True)
    conf = {"websocket": {"host": host, "port": port, "route": route, "ssl": False}}
    path.write_text(json.dumps(conf, indent=2), encoding="utf-8")
    return path


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line:
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
    return out


@dataclass
class OvosBus:
    """A running ovos-messagebus plus the echo responder."""

    host: str
    port: int
    route: str
    root: Path
    bus_proc: ManagedProcess
    responder_proc: ManagedProcess
    seen_path: Path
    all_path: Path
    started_s: float = 0.0

    @property
    def url(self) -> str:
        """Websocket URL of the bus."""
        return f"ws://{self.host}:{self.port}{self.route}"

    def seen(self) -> list[dict[str, Any]]:
        """Every ``recognizer_loop:utterance`` the responder got: type, data, context."""
        return _read_jsonl(self.seen_path)

    def seen_by_session(self, session_id: str) -> list[dict[str, Any]]:
        """Utterances whose context carries ``session_id``."""
        return [
            m
            for m in self.seen()
            if ((m.get("context") or {}).get("session") or {}).get("session_id") == session_id
        ]

    def bus_messages(self) -> list[dict[str, Any]]:
        """Every message the responder saw on the bus (hive.client.connect etc.)."""
        return _read_jsonl(self.all_path)

    def log_files(self) -> list[Path]:
        """Logs of the bus and the responder."""
        files = [self.bus_proc.log_path, self.responder_proc.log_path]
        return files + [p for p in _state_logs(self.root) if p not in files]

    def logs(self) -> str:
        """Bus and responder logs as one string."""
        return format_logs(self.log_files())

    def check_alive(self) -> None:
        """Raise if the bus or the responder died."""
        for proc in (self.bus_proc, self.responder_proc):
            if not proc.alive():
                raise HarnessError(f"{proc.name} died\n{self.logs()}")


@contextlib.contextmanager
def ovos_bus(
    refpython: Path,
    workdir: Path,
    *,
    host: str = LOOPBACK,
    route: str = "/core",
    startup_timeout: float = 30.0,
    attempts: int = 3,
) -> Iterator[OvosBus]:
    """Run ``ovos-messagebus`` (configured via an isolated mycroft.conf) and the responder."""
    workdir = Path(workdir)
    root = workdir / "env"
    env = isolated_env(root)
    exe = ref_bin(refpython, "ovos-messagebus")
    started = time.monotonic()
    bus_proc: ManagedProcess | None = None
    responder: ManagedProcess | None = None
    try:
        for attempt in range(attempts):
            port = free_port(host)
            write_mycroft_conf(Path(env["XDG_CONFIG_HOME"]), host, port, route)
            bus_proc = start_process(
                "ovos-messagebus", [exe], env=env, log_path=workdir / "messagebus.log"
            )
            try:
                wait_until(
                    lambda port=port: port_open(host, port),
                    timeout=startup_timeout,
                    what=f"ovos-messagebus on {host}:{port}",
                    procs=[bus_proc],
                )
                break
            except HarnessError:
                bus_proc.stop()
                if attempt == attempts - 1:
                    raise
        assert bus_proc is not None
        seen_path = workdir / "responder-seen.jsonl"
        all_path = workdir / "responder-all.jsonl"
        ready = workdir / "responder.ready"
        for path in (seen_path, all_path, ready):
            path.unlink(missing_ok=True)
        responder = start_process(
            "responder",
            [
                refpython,
                RESPONDER_SCRIPT,
                *("--host", host, "--port", str(port), "--route", route),
                *("--seen", seen_path, "--all", all_path, "--ready", ready),
            ],
            env=env,
            log_path=workdir / "responder.log",
        )
        wait_until(
            ready.exists,
            timeout=startup_timeout,
            what="the responder to connect to the bus",
            procs=[bus_proc, responder],
        )
        yield OvosBus(
            host=host,
            port=port,
            route=route,
            root=root,
            bus_proc=bus_proc,
            responder_proc=responder,
            seen_path=seen_path,
            all_path=all_path,
            started_s=round(time.monotonic() - started, 3),
        )
    finally:
        for proc in (responder, bus_proc):
            if proc is not None:
                proc.stop()


# --------------------------------------------------------------------------- reference hub


@dataclass
class ClientCreds:
    """One client row to register in a reference hub."""

    name: str
    access_key: str
    password: str | None = None
    crypto_key: str | None = None
    admin: bool = False
    allowed_types: list[str] | None = None
    message_blacklist: list[str] | None = None
    skill_blacklist: list[str] | None = None
    intent_blacklist: list[str] | None = None

    def to_spec(self) -> dict[str, Any]:
        """JSON row for ``_refhub_setup.py``."""
        return {
            "name": self.name,
            "access_key": self.access_key,
            "password": self.password,
            "crypto_key": self.crypto_key,
            "admin": self.admin,
            "allowed_types": self.allowed_types,
            "message_blacklist": self.message_blacklist,
            "skill_blacklist": self.skill_blacklist,
            "intent_blacklist": self.intent_blacklist,
        }


def make_client(
    name: str,
    *,
    password: bool | str = True,
    crypto_key: bool | str = False,
    admin: bool = False,
    **kw: Any,
) -> ClientCreds:
    """Client row with random credentials (``True`` = generate, ``False`` = none)."""
    pw = secrets.token_hex(16) if password is True else (password or None)
    ck = secrets.token_hex(8) if crypto_key is True else (crypto_key or None)
    return ClientCreds(
        name=name,
        access_key=secrets.token_hex(16),
        password=pw,
        crypto_key=ck,
        admin=admin,
        **kw,
    )


def default_clients() -> list[ClientCreds]:
    """The standard rows.

    ``sat``: password, no crypto key. ``sat_ck``: password + 16-char crypto key
    (what ``add-client`` makes). ``nopass``: neither (the hub offers RSA).
    ``admin``: password, admin.
    """
    return [
        make_client("sat"),
        make_client("sat_ck", crypto_key=True),
        make_client("nopass", password=False),
        make_client("admin", admin=True),
    ]


@dataclass
class ReferenceHub:
    """A running ``hivemind-core listen`` (4.0.0)."""

    host: str
    port: int
    clients: dict[str, ClientCreds]
    root: Path
    log_path: Path
    proc: ManagedProcess
    bus: OvosBus
    server_config: dict[str, Any] = field(default_factory=dict)
    db_rows: list[dict[str, Any]] = field(default_factory=list)
    started_s: float = 0.0

    @property
    def url(self) -> str:
        """Websocket URL (without credentials)."""
        return f"ws://{self.host}:{self.port}"

    def client(self, name: str = "sat") -> ClientCreds:
        """Credentials of a registered client."""
        return self.clients[name]

    def log_files(self) -> list[Path]:
        """Hub logs (stdout/stderr and the HiveMind logger files)."""
        return [self.log_path, *(p for p in _state_logs(self.root) if p != self.log_path)]

    def logs(self) -> str:
        """Hub logs as one string."""
        return format_logs(self.log_files())

    def all_log_files(self) -> list[Path]:
        """Hub, bus and responder logs."""
        return self.log_files() + self.bus.log_files()


def write_server_json(
    config_home: Path,
    *,
    host: str,
    port: int,
    bus: OvosBus,
    allowed_encodings: Sequence[str] | None,
    allowed_ciphers: Sequence[str] | None,
    binarize: bool,
) -> dict[str, Any]:
    """Write ``hivemind-core/server.json``: websocket only, OVOS agent on ``bus``, json db."""
    conf: dict[str, Any] = {
        "binarize": bool(binarize),
        "agent_protocol": {
            "module": "hivemind-ovos-agent-plugin",
            "hivemind-ovos-agent-plugin": {"host": bus.host, "port": bus.port},
        },
        "binary_protocol": {"module": None},
        "network_protocol": {
            "hivemind-websocket-plugin": {
                "host": host,
                "port": port,
                "ssl": False,
                "cert_dir": str(Path(config_home).parent / "certs"),
                "cert_name": "hivemind",
            }
        },
        "database": {
            "module": "hivemind-json-db-plugin",
            "hivemind-json-db-plugin": {"name": "clients", "subfolder": "hivemind-core"},
        },
    }
    if allowed_encodings is not None:
        conf["allowed_encodings"] = list(allowed_encodings)
    if allowed_ciphers is not None:
        conf["allowed_ciphers"] = list(allowed_ciphers)
    path = Path(config_home) / "hivemind-core" / "server.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(conf, indent=2), encoding="utf-8")
    return conf


@contextlib.contextmanager
def reference_hub(
    refpython: Path,
    bus: OvosBus,
    workdir: Path,
    *,
    allowed_encodings: Sequence[str] | None = None,
    allowed_ciphers: Sequence[str] | None = None,
    binarize: bool = False,
    clients: Sequence[ClientCreds] | None = None,
    host: str = LOOPBACK,
    startup_timeout: float = 60.0,
    attempts: int = 3,
) -> Iterator[ReferenceHub]:
    """Run the reference hub on a free loopback port, with its own isolated XDG tree.

    Ready means: the websocket port accepts connections (the hub opens it only
    after its agent reached the bus) AND a probe with an unknown key is upgraded
    and then closed by the hub's handler.
    """
    workdir = Path(workdir)
    root = workdir / "env"
    env = isolated_env(root)
    # Same bus address in the hub's own OVOS config, so nothing falls back to :8181.
    write_mycroft_conf(Path(env["XDG_CONFIG_HOME"]), bus.host, bus.port, bus.route)
    rows = list(default_clients() if clients is None else clients)
    started = time.monotonic()
    proc: ManagedProcess | None = None

    def configure_new_port() -> int:
        new_port = free_port(host)
        write_server_json(
            Path(env["XDG_CONFIG_HOME"]),
            host=host,
            port=new_port,
            bus=bus,
            allowed_encodings=allowed_encodings,
            allowed_ciphers=allowed_ciphers,
            binarize=binarize,
        )
        return new_port

    try:
        port = configure_new_port()
        setup = _register_clients(refpython, env, workdir, rows)
        log_path = workdir / "hub.log"
        for attempt in range(attempts):
            if attempt:
                port = configure_new_port()
            proc = start_process(
                "hivemind-core",
                [ref_bin(refpython, "hivemind-core"), "listen"],
                env=env,
                log_path=log_path,
            )
            try:
                wait_until(
                    lambda port=port: port_open(host, port),
                    timeout=startup_timeout,
                    what=f"hivemind-core listening on {host}:{port}",
                    procs=[proc],
                )
                break
            except HarnessError as exc:
                proc.stop()
                bus.check_alive()
                if attempt == attempts - 1:
                    raise HarnessError(f"{exc}\n{bus.logs()}") from None
        assert proc is not None
        status, _rest = probe_hub(host, port)
        if " 101 " not in status + " ":
            raise HarnessError(
                f"hub probe got {status!r} instead of a websocket upgrade\n"
                + format_logs([log_path, *_state_logs(root)])
            )
        yield ReferenceHub(
            host=host,
            port=port,
            clients={c.name: c for c in rows},
            root=root,
            log_path=log_path,
            proc=proc,
            bus=bus,
            server_config=setup.get("server", {}),
            db_rows=setup.get("clients", []),
            started_s=round(time.monotonic() - started, 3),
        )
    finally:
        if proc is not None:
            proc.stop()


def _register_clients(
    refpython: Path, env: dict[str, str], workdir: Path, rows: Sequence[ClientCreds]
) -> dict[str, Any]:
    """Add ``rows`` to the hub's database with the reference ClientDatabase."""
    spec_path = workdir / "clients-spec.json"
    out_path = workdir / "clients-db.json"
    spec_path.write_text(json.dumps({"clients": [c.to_spec() for c in rows]}), encoding="utf-8")
    log_path = workdir / "hub-setup.log"
    proc = start_process(
        "hub-setup",
        [refpython, HUB_SETUP_SCRIPT, "--spec", spec_path, "--out", out_path],
        env=env,
        log_path=log_path,
    )
    try:
        rc = proc.popen.wait(timeout=120)
    except subprocess.TimeoutExpired:
        proc.stop()
        raise HarnessError(f"hub setup timed out\n{proc.log()}") from None
    if rc != 0 or not out_path.exists():
        raise HarnessError(f"hub setup failed (rc={rc})\n{proc.log()}")
    result: dict[str, Any] = json.loads(out_path.read_text(encoding="utf-8"))
    return result


# --------------------------------------------------------------------------- stock client


def run_reference_client(
    refpython: Path,
    host: str,
    port: int,
    key: str,
    password: str,
    *,
    utterance: str = "hello",
    site_id: str = "test",
    binarize: bool = False,
    timeout: float = 30.0,
    mode: str = "roundtrip",
    count: int = 1,
    crypto_key: str | None = None,
    useragent: str | None = None,
    reply_timeout: float = 10.0,
    destination: str | None = None,
    force_rsa: bool = False,
    stop_on_error: bool = False,
    extra: Sequence[str] = (),
    workdir: Path | None = None,
) -> dict[str, Any]:
    """Run ``_refclient.py`` with the stock client and return its JSON report.

    ``mode="roundtrip"`` sends ``count`` utterances sequentially (``rtts`` lists
    each round trip); ``mode="connect"`` only tries to connect and reports after
    ``timeout`` seconds (or at the first socket error with ``stop_on_error``).
    ``force_rsa`` drops the password after construction so the stock client
    offers its RSA pubkey (it cannot finish that handshake in 0.4.4). The client gets a fresh isolated HOME/XDG tree, so it
    never reads the user's identity. The report gains ``log`` (stderr log path)
    and ``returncode``.
    """
    import tempfile

    base = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="refclient-"))
    base.mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=base))
    env = isolated_env(run_dir / "env")
    argv: list[str | os.PathLike[str]] = [
        refpython,
        CLIENT_SCRIPT,
        *("--host", host, "--port", str(port), "--key", key, "--password", password),
        *("--site-id", site_id, "--mode", mode, "--count", str(count)),
        *("--utterance", utterance, "--timeout", str(timeout)),
        *("--reply-timeout", str(reply_timeout)),
    ]
    if binarize:
        argv.append("--binarize")
    if crypto_key is not None:
        argv += ["--crypto-key", crypto_key]
    if useragent is not None:
        argv += ["--useragent", useragent]
    if destination is not None:
        argv += ["--destination", destination]
    if force_rsa:
        argv.append("--force-rsa")
    if stop_on_error:
        argv.append("--stop-on-error")
    argv += list(extra)

    out_path = run_dir / "stdout.jsonl"
    log_path = run_dir / "client.log"
    args = [str(a) for a in argv]
    with out_path.open("wb") as out, log_path.open("wb") as err:
        popen = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            env=env,
            start_new_session=True,
        )
        proc = ManagedProcess("refclient", args, popen, log_path)
        budget = timeout + max(count, 1) * reply_timeout + 60.0
        try:
            rc: int | None = popen.wait(timeout=budget)
        except subprocess.TimeoutExpired:
            rc = None
        finally:
            proc.stop(grace=1.0)
    lines = [ln for ln in out_path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    if rc is None or not lines:
        raise HarnessError(
            f"reference client produced no report (rc={rc})\n" + format_logs([log_path])
        )
    report: dict[str, Any] = json.loads(lines[-1])
    report["log"] = str(log_path)
    report["returncode"] = rc
    return report


# --------------------------------------------------------------------------- reference hub v3


def ref_python_v3(log: TextIO | None = None) -> Path:
    """Interpreter of the ``v3`` reference venv (hivemind-core 5.3.10a1), built on first use."""
    spec = importlib.util.spec_from_file_location("_hivemind_refenv", TESTS_DIR / "refenv.py")
    if spec is None or spec.loader is None:
        raise HarnessError(f"cannot load {TESTS_DIR / 'refenv.py'}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return Path(module.ensure(log=log, generation="v3"))


#: The 5.3.10a1 hub: no runtime zxcvbn check (the rows' passwords are random anyway).
V3_HUB_ENV = {"HIVEMIND_DISABLE_PASSWORD_STRENGTH_CHECK": "1"}
#: What a v3 row may send upward (5.x denies every type by default).
V3_ALLOWED_TYPES = ("recognizer_loop:utterance",)


def v3_client(name: str = "sat") -> ClientCreds:
    """A row for the 5.3.10a1 hub: random key and password, utterances allowed."""
    return make_client(name, allowed_types=list(V3_ALLOWED_TYPES))


def write_server_json_v3(
    config_home: Path, *, host: str, port: int, bus: OvosBus, binarize: bool
) -> dict[str, Any]:
    """``hivemind-core/server.json`` of 5.3.10a1: websocket only, OVOS agent on ``bus``,
    json database, no presence announcements."""
    conf: dict[str, Any] = {
        "binarize": bool(binarize),
        "agent_protocol": {
            "module": "hivemind-ovos-agent-plugin",
            "hivemind-ovos-agent-plugin": {"host": bus.host, "port": bus.port},
        },
        "binary_protocol": {"module": None},
        "presence": {"enabled": False, "zeroconf": False, "upnp": False},
        "network_protocol": {
            "hivemind-websocket-plugin": {
                "host": host,
                "port": port,
                "ssl": False,
                "cert_dir": str(Path(config_home).parent / "certs"),
                "cert_name": "hivemind",
            }
        },
        "database": {
            "module": "hivemind-json-db-plugin",
            "hivemind-json-db-plugin": {"name": "clients", "subfolder": "hivemind-core"},
        },
    }
    path = Path(config_home) / "hivemind-core" / "server.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(conf, indent=2), encoding="utf-8")
    return conf


def _register_clients_v3(
    refpython: Path, env: dict[str, str], workdir: Path, rows: Sequence[ClientCreds]
) -> None:
    """Add ``rows`` through the 5.3.10a1 CLI (``add-client ... --allow <type>``)."""
    exe = ref_bin(refpython, "hivemind-core")
    for row in rows:
        args: list[Any] = [exe, "add-client", "--name", row.name, "--access-key", row.access_key]
        if row.password:
            args += ["--password", row.password, "--allow-weak-password"]
        if row.admin:
            args += ["--admin", "true"]
        for mtype in row.allowed_types or ():
            args += ["--allow", mtype]
        proc = start_process(
            f"add-client-{row.name}", args, env=env, log_path=workdir / f"add-{row.name}.log"
        )
        try:
            rc = proc.popen.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.stop()
            raise HarnessError(f"add-client {row.name} timed out\n{proc.log()}") from None
        if rc != 0:
            raise HarnessError(f"add-client {row.name} failed (rc={rc})\n{proc.log()}")


@contextlib.contextmanager
def reference_hub_v3(
    refpython: Path,
    bus: OvosBus,
    workdir: Path,
    *,
    clients: Sequence[ClientCreds] | None = None,
    binarize: bool = False,
    site_id: str | None = None,
    host: str = LOOPBACK,
    startup_timeout: float = 60.0,
    attempts: int = 3,
) -> Iterator[ReferenceHub]:
    """Run ``hivemind-core listen`` 5.3.10a1 (protocol v3 only) on a free loopback port.

    ``refpython`` is the v3 venv's interpreter (:func:`ref_python_v3`). Rows
    default to one ``sat`` (:func:`v3_client`). ``site_id``: the hub identity's
    site (5.x injects an ESCALATEd BUS message into its bus only when the
    message's ``target_site_id`` is that site). Ready means: the port accepts
    connections and an upgrade with an unknown key is answered.
    """
    workdir = Path(workdir)
    root = workdir / "env"
    env = isolated_env(root, V3_HUB_ENV)
    write_mycroft_conf(Path(env["XDG_CONFIG_HOME"]), bus.host, bus.port, bus.route)
    rows = list(clients if clients is not None else [v3_client("sat")])
    started = time.monotonic()
    proc: ManagedProcess | None = None
    config_home = Path(env["XDG_CONFIG_HOME"])
    if site_id is not None:
        ident = config_home / "hivemind" / "_identity.json"
        ident.parent.mkdir(parents=True, exist_ok=True)
        ident.write_text(json.dumps({"site_id": site_id}), encoding="utf-8")
    try:
        port = free_port(host)
        write_server_json_v3(config_home, host=host, port=port, bus=bus, binarize=binarize)
        _register_clients_v3(refpython, env, workdir, rows)
        log_path = workdir / "hub.log"
        for attempt in range(attempts):
            if attempt:
                port = free_port(host)
                write_server_json_v3(config_home, host=host, port=port, bus=bus, binarize=binarize)
            proc = start_process(
                "hivemind-core-v3",
                [ref_bin(refpython, "hivemind-core"), "listen"],
                env=env,
                log_path=log_path,
            )
            try:
                wait_until(
                    lambda port=port: port_open(host, port),
                    timeout=startup_timeout,
                    what=f"hivemind-core 5.3.10a1 listening on {host}:{port}",
                    procs=[proc],
                )
                break
            except HarnessError as exc:
                proc.stop()
                bus.check_alive()
                if attempt == attempts - 1:
                    raise HarnessError(f"{exc}\n{bus.logs()}") from None
        assert proc is not None
        status, _rest = probe_hub(host, port)
        if " 101 " not in status + " ":
            raise HarnessError(f"v3 hub probe got {status!r}\n" + format_logs([log_path]))
        yield ReferenceHub(
            host=host,
            port=port,
            clients={c.name: c for c in rows},
            root=root,
            log_path=log_path,
            proc=proc,
            bus=bus,
            started_s=round(time.monotonic() - started, 3),
        )
    finally:
        if proc is not None:
            proc.stop()
