"""Fixtures running the reference HiveMind stack as subprocesses (see harness.py)."""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from . import harness

#: Log providers of everything currently running, dumped when a test fails.
_LIVE_LOGS: dict[int, Callable[[], list[Path]]] = {}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Remember each phase's report on the item (``item.rep_call`` ...)."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


@pytest.fixture(autouse=True)
def _dump_logs_on_failure(request: pytest.FixtureRequest) -> Iterator[list[Path]]:
    """On failure print the logs of every running reference process and client run."""
    client_logs: list[Path] = []
    yield client_logs
    failed = any(
        getattr(getattr(request.node, f"rep_{when}", None), "failed", False)
        for when in ("setup", "call")
    )
    if failed:
        paths: list[Path] = []
        for provider in list(_LIVE_LOGS.values()):
            paths.extend(provider())
        paths.extend(client_logs)
        harness.dump_logs(dict.fromkeys(paths), out=sys.stderr)


@pytest.fixture(scope="session")
def refpython() -> Path:
    """Interpreter of the reference venv (built on first use; a build failure fails loudly)."""
    try:
        return harness.ref_python(log=sys.stderr)
    except RuntimeError as exc:
        pytest.fail(f"cannot build the reference venv:\n{exc}", pytrace=False)


@pytest.fixture(scope="session")
def ovos_bus(
    refpython: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[harness.OvosBus]:
    """A real ovos-messagebus on a free loopback port plus the echo responder."""
    with harness.ovos_bus(refpython, tmp_path_factory.mktemp("ovos-bus")) as bus:
        _LIVE_LOGS[id(bus)] = bus.log_files
        try:
            yield bus
        finally:
            _LIVE_LOGS.pop(id(bus), None)


def _hub_factory(
    refpython: Path, bus: harness.OvosBus, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., harness.ReferenceHub]]:
    with contextlib.ExitStack() as stack:

        def start(**kwargs: Any) -> harness.ReferenceHub:
            workdir = tmp_path_factory.mktemp("ref-hub")
            hub = stack.enter_context(harness.reference_hub(refpython, bus, workdir, **kwargs))
            _LIVE_LOGS[id(hub)] = hub.log_files
            stack.callback(_LIVE_LOGS.pop, id(hub), None)
            return hub

        yield start


@pytest.fixture
def reference_hub(
    refpython: Path, ovos_bus: harness.OvosBus, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., harness.ReferenceHub]]:
    """Factory starting ``hivemind-core listen`` 4.0.0; stopped after the test.

    ``reference_hub(allowed_encodings=None, allowed_ciphers=None, binarize=False,
    clients=None)``; ``clients=None`` registers ``harness.default_clients()``
    (``sat``, ``sat_ck``, ``nopass``, ``admin``).
    """
    yield from _hub_factory(refpython, ovos_bus, tmp_path_factory)


@pytest.fixture(scope="module")
def module_reference_hub(
    refpython: Path, ovos_bus: harness.OvosBus, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., harness.ReferenceHub]]:
    """Same factory, but hubs live until the end of the module."""
    yield from _hub_factory(refpython, ovos_bus, tmp_path_factory)


@pytest.fixture
def run_reference_client(
    refpython: Path,
    tmp_path_factory: pytest.TempPathFactory,
    _dump_logs_on_failure: list[Path],
) -> Callable[..., dict[str, Any]]:
    """Callable running the stock client once; see ``harness.run_reference_client``.

    Safe to call from several threads at once (pytest's ``mktemp`` is not).
    """
    lock = threading.Lock()

    def run(host: str, port: int, key: str, password: str, **kwargs: Any) -> dict[str, Any]:
        if "workdir" not in kwargs:
            with lock:
                kwargs["workdir"] = tmp_path_factory.mktemp("ref-client")
        report = harness.run_reference_client(refpython, host, port, key, password, **kwargs)
        _dump_logs_on_failure.append(Path(report["log"]))
        return report

    return run
