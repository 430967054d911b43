"""The package's import rule (docs/architecture.md, "Layout and the import rule"),
read from the source with ast, so no module is imported and every import counts:
those inside functions and under TYPE_CHECKING too.

endpoints -> schema/resolvers -> services -> storage, with the foundation usable
everywhere; a unit (a top-level module or package of auditlog) imports only units
of its own layer or below, and no two units import each other, however indirectly.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "auditlog"

# Lowest first. A unit may import its own layer and those below it.
LAYERS: list[tuple[str, set[str]]] = [
    ("foundation", {"model", "config", "errors", "catalog", "jcs", "aio", "access_log", "logs"}),
    ("storage", {"storage"}),
    # Building blocks that services combine; none of them speaks for a caller.
    (
        "pieces",
        {"ingest", "integrity", "exports", "ocsf", "cursors", "paging", "streaming", "metrics"},
    ),
    ("services", {"services", "auth", "ws_registry"}),
    ("api", {"schema", "resolvers", "jobs"}),
    ("wiring", {"runtime"}),
    ("endpoints", {"endpoints", "graphql_app", "ws_connections", "middleware"}),
    ("entry", {"app", "cli", "server", "serve_demo", "demo"}),
]

# Imports that break the rule today, each with why it is still there. An entry
# that no longer occurs fails the test, so the list only shrinks.
ALLOWED: dict[tuple[str, str], str] = {
    # schema -> resolvers: resolvers build schema types, but these types still have
    # fields that fetch through a resolver. They belong with their resolvers (as the
    # root types now are, in resolvers/root.py) or behind an interface on the context.
    (
        "auditlog.schema.types",
        "auditlog.resolvers.integrity",
    ): "AuditEvent.leafIndex and inclusionProof load through the integrity resolvers",
    (
        "auditlog.schema.integrity",
        "auditlog.resolvers.integrity",
    ): "Integrity's fields and IntegrityQuery resolve through the integrity resolvers",
    (
        "auditlog.schema.streaming",
        "auditlog.resolvers.streaming",
    ): "StreamingDestination.deadLetters and the streaming Query/Mutation fields",
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "auditlog" or node.module.startswith("auditlog."):
                # `from auditlog.pkg import mod` imports the submodule pkg.mod.
                for alias in node.names:
                    name = f"{node.module}.{alias.name}"
                    found.add(name if _is_module(name) else node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("auditlog."))
    return found


def _is_module(name: str) -> bool:
    path = PACKAGE.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def _unit(module: str) -> str:
    return module.split(".")[1]


def _edges() -> dict[tuple[str, str], set[tuple[str, str]]]:
    """(unit, unit) -> the (module, imported module) pairs behind it."""
    edges: dict[tuple[str, str], set[tuple[str, str]]] = defaultdict(set)
    for path in PACKAGE.rglob("*.py"):
        module = _module_name(path)
        if module == "auditlog":
            continue
        for target in _imports(path):
            if (module, target) in ALLOWED:
                continue
            if _unit(module) != _unit(target):
                edges[(_unit(module), _unit(target))].add((module, target))
    return edges


def _layer_of() -> dict[str, int]:
    return {unit: rank for rank, (_, units) in enumerate(LAYERS) for unit in units}


def test_every_unit_has_a_layer() -> None:
    units = {
        p.stem if p.is_file() else p.name
        for p in PACKAGE.iterdir()
        if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").exists()
    }
    assert units - set(_layer_of()) == set()
    assert set(_layer_of()) - units == set()


def test_imports_only_go_down_or_sideways() -> None:
    rank = _layer_of()
    upwards = sorted(
        f"{module} -> {target}"
        for (a, b), pairs in _edges().items()
        if rank[b] > rank[a]
        for module, target in pairs
    )
    assert upwards == []


def test_no_cycles_between_units() -> None:
    graph: dict[str, set[str]] = defaultdict(set)
    for a, b in _edges():
        graph[a].add(b)

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            unit = todo.pop()
            if unit == goal:
                return True
            if unit not in seen:
                seen.add(unit)
                todo.extend(graph[unit])
        return False

    cycles = sorted(f"{a} <-> {b}" for a, b in _edges() if reaches(b, a))
    assert cycles == []


def test_storage_imports_only_the_foundation() -> None:
    foundation = LAYERS[0][1]
    above = sorted(
        f"{module} -> {target}"
        for (a, b), pairs in _edges().items()
        if a == "storage" and b not in foundation
        for module, target in pairs
    )
    assert above == []


def test_schema_imports_neither_storage_nor_the_runtime() -> None:
    forbidden = sorted(
        f"{module} -> {target}"
        for (a, b), pairs in _edges().items()
        if a == "schema" and b in {"storage", "runtime"}
        for module, target in pairs
    )
    assert forbidden == []


def test_every_allowed_exception_still_occurs() -> None:
    present = {
        (_module_name(path), target) for path in PACKAGE.rglob("*.py") for target in _imports(path)
    }
    assert set(ALLOWED) - present == set()
