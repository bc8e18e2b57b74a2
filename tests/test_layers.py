"""The import rules of ``docs/architecture.md`` ("Import rules"), checked on ``src/`` with ``ast``.

Each rule is one test whose failure message lists every offending
``module:line``. The checkers are plain functions of a source root, so the last
test runs each of them on a small scratch tree that breaks its rule, proving
that every check can fail.

What counts as an import:

* rules (a), (b) and (c) look at every ``import`` statement anywhere in a
  module (module level, functions, ``if TYPE_CHECKING:`` blocks): a layer may
  not depend on another one even lazily;
* rule (d), import cycles, counts the imports that run when the module is
  imported: module level, including ``try``/``if``/``with`` blocks and class
  bodies, but not imports under ``if TYPE_CHECKING:`` (type-only, never run)
  nor inside functions (deferred until called). An edge goes to the module
  the statement names (``from a.b import c`` names ``a.b.c`` when that is a
  module, else ``a.b``), not to the parent packages Python also initialises.

Alias modules (``sys.modules[__name__] = <module>``) keep old import paths
working; their import of the module they alias is an ordinary edge.
"""

from __future__ import annotations

import ast
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src"
OURS = ("hivemind_bus_client", "hivemind_core")

PROTOCOL = "hivemind_bus_client.protocol"
#: Ours that the protocol package may import besides itself.
PROTOCOL_MAY_IMPORT = ("hivemind_bus_client.exceptions",)
#: Standard-library modules that do I/O, threads or clocks: never in the protocol package.
PROTOCOL_FORBIDDEN = (
    "asyncio",
    "threading",
    "socket",
    "time",
    "selectors",
    "subprocess",
    "concurrent",
)

TRANSPORT = "hivemind_bus_client.transport"
TRANSPORT_FORBIDDEN = ("hivemind_bus_client.client", "hivemind_core")

#: The one private name a module may import: the C accelerator ``_speedups``,
#: imported by the pure-Python module of its own package that it speeds up.
SPEEDUPS = "_speedups"

MAX_LINES = 400
#: Modules exempt from the size rule: generated data (none today). The C
#: accelerator is a ``.c`` file and is not walked at all.
GENERATED: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Import:
    """One imported module (and, for ``from`` imports, one name of it)."""

    importer: str
    line: int
    module: str  # absolute module named by the statement
    name: str | None  # the imported name of a ``from`` import
    runtime: bool  # runs when the importer is imported (module level, not TYPE_CHECKING)

    def where(self) -> str:
        return f"{self.importer}:{self.line}"


# -- reading the tree --------------------------------------------------------------


def module_files(root: Path) -> dict[str, Path]:
    """``{dotted module name: path}`` of every ``.py`` file under ``root``."""
    out: dict[str, Path] = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if parts:
            out[".".join(parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk(nodes: list[ast.stmt], runtime: bool) -> Iterator[tuple[ast.stmt, bool]]:
    """Every import statement under ``nodes``, with whether it runs at import time."""
    for node in nodes:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node, runtime
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield from _walk(node.body, False)
        elif isinstance(node, ast.If):
            yield from _walk(node.body, runtime and not _is_type_checking(node.test))
            yield from _walk(node.orelse, runtime)
        else:
            for field in ("body", "orelse", "finalbody", "handlers", "cases"):
                for child in getattr(node, field, None) or []:
                    inner = (
                        child.body
                        if isinstance(child, (ast.excepthandler, ast.match_case))
                        else [child]
                    )
                    yield from _walk(inner, runtime)


def _package_of(module: str, path: Path) -> str:
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def imports(root: Path) -> list[Import]:
    """Every import statement of every module under ``root``."""
    files = module_files(root)
    found: list[Import] = []
    for module, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        package = _package_of(module, path)
        for node, runtime in _walk(tree.body, True):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    found.append(Import(module, node.lineno, alias.name, None, runtime))
                continue
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                found.append(Import(module, node.lineno, base, alias.name, runtime))
    return found


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def _private(part: str) -> bool:
    return part.startswith("_") and not (part.startswith("__") and part.endswith("__"))


# -- the checks ---------------------------------------------------------------------


def _target(imp: Import) -> str:
    """What a statement imports: ``a.b`` for ``import a.b``, ``a.b.c`` for ``from a.b import c``."""
    return f"{imp.module}.{imp.name}" if imp.name and imp.name != "*" else imp.module


def _unique(lines: list[str]) -> list[str]:
    return list(dict.fromkeys(lines))


def protocol_violations(root: Path) -> list[str]:
    """(a) the protocol package imports nothing of ours but itself and the exceptions, and no I/O."""
    bad = []
    for imp in imports(root):
        if not _within(imp.importer, PROTOCOL):
            continue
        target = _target(imp)
        if target.split(".")[0] in OURS:
            if not _within(target, PROTOCOL) and not any(
                _within(target, ok) for ok in PROTOCOL_MAY_IMPORT
            ):
                bad.append(f"{imp.where()} imports {target}")
        elif target.split(".")[0] in PROTOCOL_FORBIDDEN:
            bad.append(f"{imp.where()} imports {target} (no I/O, threads or clocks in the core)")
    return _unique(bad)


def transport_violations(root: Path) -> list[str]:
    """(b) the transport package never imports the client package or the hub."""
    bad = []
    for imp in imports(root):
        if not _within(imp.importer, TRANSPORT):
            continue
        target = _target(imp)
        if any(_within(target, no) for no in TRANSPORT_FORBIDDEN):
            bad.append(f"{imp.where()} imports {target}")
    return _unique(bad)


def private_import_violations(root: Path) -> list[str]:
    """(c) no module imports a name starting with ``_`` from another module."""
    bad = []
    for imp in imports(root):
        parts = imp.module.split(".")
        if imp.name is not None and _private(imp.name):
            own_package = imp.importer.rpartition(".")[0]
            if imp.name == SPEEDUPS and imp.module == own_package:
                continue  # the C accelerator of this very package
            bad.append(f"{imp.where()} imports {imp.name} from {imp.module}")
        elif any(_private(p) for p in parts[1:]):
            speedups_of_own = (
                parts[-1] == SPEEDUPS and ".".join(parts[:-1]) == (imp.importer.rpartition(".")[0])
            )
            if not speedups_of_own:
                bad.append(f"{imp.where()} imports the private module {imp.module}")
    return _unique(bad)


def import_graph(root: Path) -> dict[str, dict[str, int]]:
    """``{importer: {imported module: line}}`` of the imports that run at import time."""
    files = module_files(root)
    graph: dict[str, dict[str, int]] = {m: {} for m in files}
    for imp in imports(root):
        if not imp.runtime:
            continue
        target = imp.module
        if imp.name is not None and f"{target}.{imp.name}" in files:
            target = f"{target}.{imp.name}"
        if target in files and target != imp.importer:
            graph[imp.importer].setdefault(target, imp.line)
    return graph


def _cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(graph[start]))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(graph[child])))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    comp.append(top)
                    if top == node:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def cycle_violations(root: Path) -> list[str]:
    """(d) no cycle among our modules' import-time imports."""
    graph = import_graph(root)
    bad = []
    for comp in _cycles(graph):
        members = set(comp)
        edges = [
            f"{src}:{line} -> {dst}"
            for src in comp
            for dst, line in sorted(graph[src].items())
            if dst in members
        ]
        bad.append("cycle among " + ", ".join(comp) + ": " + "; ".join(edges))
    return bad


def size_violations(root: Path) -> list[str]:
    """(e) no module over ``MAX_LINES`` lines, generated data aside."""
    bad = []
    for module, path in module_files(root).items():
        if module in GENERATED:
            continue
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > MAX_LINES:
            bad.append(f"{module}:{lines} lines (limit {MAX_LINES})")
    return bad


def _report(rule: str, bad: list[str]) -> str:
    return f"{rule}: {len(bad)} violation(s)\n  " + "\n  ".join(bad)


# -- the rules on the real tree -------------------------------------------------------


def test_protocol_imports_only_itself_and_the_exceptions() -> None:
    bad = protocol_violations(SRC)
    assert not bad, _report("the protocol package imports outside its layer", bad)


def test_transport_never_imports_the_client_or_the_hub() -> None:
    bad = transport_violations(SRC)
    assert not bad, _report("the transport package imports a layer above it", bad)


def test_no_private_name_imported_from_another_module() -> None:
    bad = private_import_violations(SRC)
    assert not bad, _report("private names imported across modules", bad)


def test_no_import_cycle() -> None:
    bad = cycle_violations(SRC)
    assert not bad, _report("import cycles", bad)


def test_no_module_over_the_size_limit() -> None:
    bad = size_violations(SRC)
    assert not bad, _report(f"modules over {MAX_LINES} lines", bad)


# -- each check can fail ----------------------------------------------------------------

#: Scratch trees, each breaking one rule (and only that one).
SCRATCH = {
    "protocol": (
        protocol_violations,
        {
            "hivemind_bus_client/protocol/__init__.py": "",
            "hivemind_bus_client/protocol/clocky.py": "import time\n",
            "hivemind_bus_client/protocol/leaky.py": "def f():\n    from hivemind_core import node\n",
            "hivemind_bus_client/protocol/fine.py": "from hivemind_bus_client.exceptions import X\n"
            "from . import clocky\n",
        },
        ["protocol.clocky:1 imports time", "protocol.leaky:2 imports hivemind_core"],
    ),
    "transport": (
        transport_violations,
        {
            "hivemind_bus_client/transport/__init__.py": "",
            "hivemind_bus_client/transport/ws.py": "from hivemind_bus_client import client\n",
            "hivemind_bus_client/transport/typed.py": "from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n    from hivemind_core.node import HubNode\n",
        },
        ["transport.ws:1 imports hivemind_bus_client.client", "transport.typed:3 imports"],
    ),
    "private": (
        private_import_violations,
        {
            "pkg/__init__.py": "",
            "pkg/a.py": "from pkg.b import _helper\n",
            "pkg/c.py": "import pkg._hidden\n",
            "pkg/d.py": "from pkg import _hidden as h\n",
            "pkg/e.py": "from ._hidden import thing\n",
            "pkg/enc.py": "from __future__ import annotations\nfrom pkg import _speedups\n",
            "other/__init__.py": "",
            "other/enc.py": "from pkg import _speedups\n",
        },
        [
            "pkg.a:1 imports _helper from pkg.b",
            "pkg.c:1 imports the private module pkg._hidden",
            "pkg.d:1 imports _hidden from pkg",
            "pkg.e:1 imports the private module pkg._hidden",
            "other.enc:1 imports _speedups from pkg",
        ],
    ),
    "cycle": (
        cycle_violations,
        {
            "pkg/__init__.py": "",
            "pkg/a.py": "from pkg import b\n",
            "pkg/b.py": "try:\n    from pkg.c import thing\nexcept ImportError:\n    pass\n",
            "pkg/c.py": "import pkg.a\n",
            "pkg/d.py": "def f():\n    import pkg.e\n",
            "pkg/e.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg.d\n",
        },
        ["cycle among pkg.a, pkg.b, pkg.c: pkg.a:1 -> pkg.b; pkg.b:2 -> pkg.c; pkg.c:1 -> pkg.a"],
    ),
    "size": (
        size_violations,
        {
            "pkg/__init__.py": "",
            "pkg/big.py": "x = 1\n" * (MAX_LINES + 1),
            "pkg/ok.py": "x = 1\n" * MAX_LINES,
        },
        [f"pkg.big:{MAX_LINES + 1} lines"],
    ),
}


@pytest.mark.parametrize("rule", sorted(SCRATCH))
def test_each_check_catches_its_violation(rule: str, tmp_path: Path) -> None:
    check, files, expected = SCRATCH[rule]
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    found = check(tmp_path)
    for fragment in expected:
        assert any(fragment in line for line in found), (fragment, found)
    assert len(found) == len(expected), found
