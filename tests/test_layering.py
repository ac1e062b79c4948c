"""The package's import graph: imports point one way (the gateway never reaches into the model
server), and no two llmcell modules import each other, directly or around a loop (module-level
and function-level imports both count: a lazy import is still a dependency)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "llmcell"


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _graph() -> dict[str, set[str]]:
    modules = {_module(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            for t in targets:
                if t in modules and t != name and not name.startswith(t + "."):
                    graph[name].add(t)
    return graph


def test_the_edge_layers_import_nothing_below_them():
    """The gateway, endpoint picker, router, protocol, config, edge and tokenizer modules import
    neither the model server nor the engine; the admin (which reads model files' headers to size
    replicas) not the server."""
    graph = _graph()
    for name, deps in graph.items():
        below = ("llmcell.server",) if name.startswith("llmcell.admin") else (
            "llmcell.server", "llmcell.engine")
        if name.startswith(("llmcell.gateway", "llmcell.admin", "llmcell.router",
                            "llmcell.protocol", "llmcell.config", "llmcell.edge", "llmcell.epp",
                            "llmcell.tokenizer")):
            bad = sorted(d for d in deps if d.startswith(below))
            assert not bad, f"{name} imports {bad}"


def test_the_tenancy_and_routing_decisions_are_pure():
    """Quotas, leases, fair queuing and routing decide over snapshots: they import the wire types
    and nothing that does I/O (no HTTP, no database, no event loop)."""
    io = {"httpx", "starlette", "uvicorn", "sqlite3", "asyncio", "socket", "psycopg", "torch"}
    for path in [*PACKAGE.glob("tenancy/*.py"), *PACKAGE.glob("router/*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
            for n in names:
                assert n.split(".")[0] not in io, f"{path.name} imports {n}"
                if n.startswith("llmcell."):
                    assert n.startswith(("llmcell.protocol", "llmcell.router",
                                         "llmcell.tenancy")), f"{path.name} imports {n}"


def test_no_import_cycles():
    graph = _graph()
    # packages import their own submodules (lazy exports): only module-to-module edges count
    edges = {m: {d for d in ds if not m.startswith(d + ".") and not d.startswith(m + ".")}
             for m, ds in graph.items()}
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        path.append(m)
        for d in sorted(edges[m]):
            if state.get(d) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(d):] + [d]))
            if d not in state:
                visit(d)
        path.pop()
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m)


def test_no_module_over_400_lines():
    long = {str(p.relative_to(PACKAGE.parent)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 400}
    assert not long, long
