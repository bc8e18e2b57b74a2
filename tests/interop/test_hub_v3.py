"""The reference client 1.2.12a1 (protocol v3, Noise) against OUR hub.

Each case runs ``_refclient_v3.py`` in the cached v3 reference venv
(``tests/refenv.py``, generation ``v3``) against our hub in a loop thread
(``test_hub_ours.our_hub``): first contact runs XX and pins both ways, the
next connection runs KK, a wrong password is refused 1008, binarize and a
150 KB message both ways work. The 0.4.4 client on the same hub keeps v1
(``test_hub_ours.py``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest

from hivemind_core.noise_keys import PIN_FIELD

from . import harness
from .test_hub_ours import our_hub

pytestmark = pytest.mark.interop

SCRIPT = Path(__file__).with_name("_refclient_v3.py")
#: 1.2.12a1 checks password strength only on its legacy path; use a strong one anyway.
PASSWORD = "hivemind-v3-interop-Kx9q-2026-strong"


@pytest.fixture(scope="module")
def refpython_v3() -> Path:
    spec = importlib.util.spec_from_file_location(
        "_hivemind_refenv", harness.TESTS_DIR / "refenv.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    try:
        return Path(module.ensure(generation="v3"))
    except RuntimeError as exc:
        pytest.fail(f"cannot build the v3 reference venv:\n{exc}", pytrace=False)


def run_v3_client(
    refpython: Path, port: int, key: str, password: str, *extra: str, budget: float = 120.0
) -> dict[str, Any]:
    """One run of ``_refclient_v3.py`` in a fresh isolated HOME; its JSON report."""
    with tempfile.TemporaryDirectory(prefix="refclient-v3-") as tmp:
        env = harness.isolated_env(Path(tmp) / "env")
        argv = [str(refpython), str(SCRIPT), "--port", str(port), "--key", key]
        argv += ["--password", password, *extra]
        proc = subprocess.run(
            argv, env=env, capture_output=True, timeout=budget, stdin=subprocess.DEVNULL
        )
        lines = [ln for ln in proc.stdout.decode().splitlines() if ln.strip()]
        if not lines:
            raise AssertionError(
                f"no report (rc={proc.returncode}):\n{proc.stderr.decode()[-8000:]}"
            )
        report: dict[str, Any] = json.loads(lines[-1])
        report["stderr_tail"] = proc.stderr.decode()[-4000:]
        return report


def test_first_contact_xx_then_kk_with_the_pins_both_ways(refpython_v3: Path) -> None:
    with our_hub() as hub:
        row = hub.db.add_client("sat", password=PASSWORD)
        report = run_v3_client(refpython_v3, hub.port, row.api_key, PASSWORD, "--connections", "2")
        runs = report["runs"]
        assert all(r["connected"] and r["error"] is None for r in runs), report
        assert all(r["answer_len"] > 0 for r in runs), report
        stats = hub.server.stats
        assert stats.get("v3_XXpsk2") == 1 and stats.get("v3_KKpsk0") == 1, stats
        # The hub pinned the client's key; the client pinned the hub's.
        pin = hub.db.get_client(row.client_id).metadata.get(PIN_FIELD)
        assert pin and len(pin) == 64
        assert hub.server.node.noise.public_hex in runs[-1]["pins"].values(), runs[-1]["pins"]
        assert hub.server.node.noise.psks.derivations == 1


def test_a_wrong_password_is_refused(refpython_v3: Path) -> None:
    with our_hub() as hub:
        row = hub.db.add_client("sat", password=PASSWORD)
        report = run_v3_client(
            refpython_v3,
            hub.port,
            row.api_key,
            "a-different-but-long-password-9q",
            "--timeout",
            "20",
        )
        run = report["runs"][0]
        assert not run["connected"], report
        # XX: the client finds the wrong PSK at m2; the hub never keys a session.
        assert hub.server.stats.get("v3_XXpsk2") is None, hub.server.stats
        assert hub.db.get_client(row.client_id).metadata.get(PIN_FIELD) is None


def test_a_wrong_password_under_kk_is_refused_1008_by_the_hub(
    refpython_v3: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The client keeps its PSK (its cache wins over the password); the hub's row changes."""
    with our_hub() as hub, tempfile.TemporaryDirectory() as tmp:
        row = hub.db.add_client("sat", password=PASSWORD)
        go = Path(tmp) / "go"
        env = harness.isolated_env(Path(tmp) / "env")
        argv = [str(refpython_v3), str(SCRIPT), "--port", str(hub.port), "--key", row.api_key]
        argv += ["--password", PASSWORD, "--connections", "2", "--wait-file", str(go)]
        argv += ["--timeout", "20"]
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            harness.net.wait_until(
                lambda: hub.db.get_client(row.client_id).metadata.get(PIN_FIELD),
                timeout=60,
                what="the first connection's pin",
            )
            row = hub.db.get_client(row.client_id)
            row.password = PASSWORD + "-changed"
            hub.db.update_client(row)
            with caplog.at_level(logging.INFO, logger="hivemind_core.admission"):
                go.touch()
                out, err = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
        report = json.loads(out.decode().strip().splitlines()[-1])
        first, second = report["runs"]
        assert first["connected"] and not second["connected"], (report, err.decode()[-4000:])
        refusals = [r.getMessage() for r in caplog.records if "handshake failure" in r.getMessage()]
        assert refusals, [r.getMessage() for r in caplog.records]
        # The KK attempt never keyed: one XX session in all, and the pin is kept.
        assert hub.server.stats.get("v3_XXpsk2") == 1
        assert hub.server.stats.get("v3_KKpsk0") is None
        assert hub.db.get_client(row.client_id).metadata.get(PIN_FIELD)


@pytest.mark.parametrize("binarize", [False, True], ids=["json", "binarize"])
def test_a_150_kb_message_both_ways(refpython_v3: Path, binarize: bool) -> None:
    with our_hub(binarize=binarize) as hub:
        row = hub.db.add_client("sat", password=PASSWORD)
        report = run_v3_client(refpython_v3, hub.port, row.api_key, PASSWORD, "--size", "150000")
        run = report["runs"][0]
        assert run["connected"] and run["error"] is None, report
        # The embedded agent answers "I heard: <text>. ...": the text made it both ways.
        assert run["answer_len"] > report["sent_len"] >= 150_000 - 1
        assert run["answer_head"].startswith("I heard: 0000000 0000001")
        sent = hub.server.agent.injected if hasattr(hub.server.agent, "injected") else None
        if sent is not None:
            got = sent[-1]["data"]["utterances"][0]
            assert hashlib.sha256(got.encode()).hexdigest() == report["sent_sha256"]


def test_a_reinstalled_client_is_refused_until_its_pin_is_reset(refpython_v3: Path) -> None:
    """A new client key (a fresh identity) contradicts the hub's pin; the CLI's reset clears it."""
    with our_hub() as hub:
        row = hub.db.add_client("sat", password=PASSWORD)
        first = run_v3_client(refpython_v3, hub.port, row.api_key, PASSWORD)
        assert first["runs"][0]["connected"], first
        harness.net.wait_until(
            lambda: hub.db.get_client(row.client_id).metadata.get(PIN_FIELD), what="the pin"
        )
        pin = hub.db.get_client(row.client_id).metadata[PIN_FIELD]
        # Each run has a fresh HOME: a new identity, so a new Noise key.
        refused = run_v3_client(
            refpython_v3, hub.port, row.api_key, PASSWORD, "--timeout", "20", "--reply-timeout", "5"
        )
        run = refused["runs"][0]
        # Nothing acknowledges m3, so the client may believe it is in; the hub
        # closes 1008 on the pin and never answers.
        assert not run["connected"] or run["error"] == "no speak answer", refused
        assert hub.server.stats.get("v3_XXpsk2") == 1, hub.server.stats
        assert hub.db.get_client(row.client_id).metadata[PIN_FIELD] == pin
        # What `hivemind-core reset-noise-pin` does (tests/hub/test_v3_cli.py runs the command).
        row = hub.db.get_client(row.client_id)
        del row.metadata[PIN_FIELD]
        hub.db.update_client(row)
        again = run_v3_client(refpython_v3, hub.port, row.api_key, PASSWORD)
        assert again["runs"][0]["connected"], again
        harness.net.wait_until(
            lambda: hub.db.get_client(row.client_id).metadata.get(PIN_FIELD) not in (None, pin),
            what="the new pin",
        )
