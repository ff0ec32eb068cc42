"""The import direction of docs/design.md's "Architecture": each layer imports only below it.

Data-driven: ``LAYERS`` places every module of ``statemachine`` and ``policies``
in one layer, bottom first; a module may import its own layer and any layer
below. ``UPWARD`` lists the few deliberate exceptions, each a lazy import
inside a function, with why. Regrouping the package into subpackages changes
these tables, not the test.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("statemachine", "policies")

LAYERS: list[tuple[str, tuple[str, ...]]] = [
    (
        "protocol",  # the vocabulary: states, reasons, the table, the policy protocol
        (
            "statemachine._clash",
            "statemachine.protocol",
            "statemachine.protocol.states",
            "statemachine.protocol.reasons",
            "statemachine.protocol.options",
            "statemachine.protocol.errors",
            "statemachine.protocol.policy",
            "statemachine.protocol.table",
            "statemachine.protocol.results",
            "statemachine.protocol.replies",
        ),
    ),
    (
        "configuration",  # the policies hosts configure, in the protocol's vocabulary
        (
            "policies",
            "policies.errors",
            "policies.budget",
            "policies.retry",
            "policies.fallback",
            "policies.loading",
        ),
    ),
    (
        "signals",  # what transitions tell the world: events, logs, metrics
        (
            "statemachine.signals",
            "statemachine.signals.logs",
            "statemachine.signals.events",
            "statemachine.signals.metrics",
        ),
    ),
    (
        "tokens",  # minting and verifying the platform's JWE tokens
        (
            "statemachine.tokens",
            "statemachine.tokens.errors",
            "statemachine.tokens.claims",
            "statemachine.tokens.keys",
            "statemachine.tokens.issuer",
            "statemachine.tokens.verifier",
        ),
    ),
    (
        "engine",  # sans-IO: the machine, the core, the effects it asks for, its snapshots
        (
            "statemachine.engine",
            "statemachine.engine._effects",
            "statemachine.engine._machine",
            "statemachine.engine._core",
            "statemachine.engine.snapshots",
        ),
    ),
    (
        "host calls",  # calling host code; the embedded activator
        (
            "statemachine.hostcalls",
            "statemachine.hostcalls.workers",
            "statemachine.hostcalls._calls",
            "statemachine.hostcalls.activator",
        ),
    ),
    (
        "drivers",  # sessions; the tag-driven tracker with its record and stores
        (
            "statemachine.sessions",
            "statemachine.tracking",
            "statemachine.tracking._rules",
            "statemachine.tracking._record",
            "statemachine.tracking._faces",
            "statemachine.stores",
            "statemachine.stores.base",
            "statemachine.stores.memory",
            "statemachine.stores.redis",
            "statemachine.stores._lane",
        ),
    ),
    (
        "web",  # the tracker behind HTTP, the inspector
        (
            "statemachine.web",
            "statemachine.web.shoppers",
            "statemachine.web.svg",
            "statemachine.web.routes",
            "statemachine.web.inspector",
            "statemachine.web.http",
            "statemachine.web.flask",
            "statemachine.web.django",
            "statemachine.web.serving",
            "statemachine.web.testing",
            "statemachine.web.reference",
        ),
    ),
    (
        "tools",  # diagrams, demo, command line
        (
            "statemachine.tools",
            "statemachine.tools.diagrams",
            "statemachine.tools.demo",
            "statemachine.tools.cli",
            "statemachine.cli",
            "statemachine.stores.check",
            "statemachine.__main__",
        ),
    ),
    ("package", ("statemachine",)),  # the public names, gathered
]

UPWARD: dict[tuple[str, str], str] = {
    (
        "statemachine.protocol.policy",
        "policies",
    ): "default_policy(): DefensivePolicy, imported on first use",
    (
        "statemachine.signals.events",
        "statemachine.hostcalls._calls",
    ): "run_listeners: a blocking driver's awaiting",
    ("statemachine.sessions", "statemachine.tools.diagrams"): "session.diagram(), drawn on demand",
}
"""Deliberate upward imports, each inside a function (checked below)."""

LAYER_OF = {module: index for index, (_, modules) in enumerate(LAYERS) for module in modules}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _sources() -> dict[str, Path]:
    return {
        _module_name(path): path
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
    }


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(imported module, at module level?) for every import of ours in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top_level = {id(node) for node in tree.body}
    found: list[tuple[str, bool]] = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
            if node.module.split(".")[0] in PACKAGES:  # ``from statemachine.signals import logs``
                names = [
                    f"{node.module}.{alias.name}"
                    if f"{node.module}.{alias.name}" in LAYER_OF
                    else node.module
                    for alias in node.names
                ]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        for name in names:
            if name.split(".")[0] in PACKAGES and name in LAYER_OF:
                found.append((name, id(node) in top_level))
    return found


def test_every_module_has_a_layer() -> None:
    modules = set(_sources())
    placed = set(LAYER_OF)
    assert sum(len(m) for _, m in LAYERS) == len(placed), "a module is placed twice"
    assert modules - placed == set(), "place every module in a layer"
    assert placed - modules == set(), "a layer names a module that does not exist"


@pytest.mark.parametrize("module", sorted(_sources()))
def test_imports_go_down_the_layers(module: str) -> None:
    layer = LAYER_OF[module]
    for imported, top_level in _imports(_sources()[module]):
        if LAYER_OF[imported] <= layer:
            continue
        why = UPWARD.get((module, imported))
        assert why is not None, (
            f"{module} ({LAYERS[layer][0]}) imports {imported} "
            f"({LAYERS[LAYER_OF[imported]][0]}), a layer above it"
        )
        assert not top_level, f"{module} may import {imported} only lazily ({why})"


def test_every_exception_is_still_needed() -> None:
    sources = _sources()
    for importer, imported in UPWARD:
        assert any(name == imported for name, _ in _imports(sources[importer])), (
            importer,
            imported,
        )
