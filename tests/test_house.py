"""The package's structure: no import cycle among its modules (module-level and function-level imports alike),
and the sandbox's child side is imported by nothing (it runs as ``python -m edgeattn.sandbox_child``)."""

from __future__ import annotations

import ast

from conftest import ROOT

PACKAGE = ROOT / "edgeattn"


def imports() -> dict[str, set[str]]:
    """module -> the package's modules it imports, anywhere in its code."""
    modules = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__"}
    edges: dict[str, set[str]] = {m: set() for m in modules}
    for module in modules:
        for node in ast.walk(ast.parse((PACKAGE / f"{module}.py").read_text())):
            names: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module == "edgeattn":
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("edgeattn."):
                names = [node.module.split(".")[1]]
            elif isinstance(node, ast.Import):
                names = [a.name.split(".")[1] for a in node.names if a.name.startswith("edgeattn.")]
            edges[module] |= {n for n in names if n in modules and n != module}
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_the_package_has_no_import_cycle():
    assert cycles(imports()) == []


def test_the_cycle_finder_finds_one():  # the check above can fail
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_nothing_imports_the_sandbox_child():
    assert [m for m, targets in imports().items() if "sandbox_child" in targets] == []


def test_the_runtime_copy_of_the_default_tolerance_agrees():
    """runtime.py imports nothing from edgeattn (it is copied into apps), so it keeps its own copy."""
    from edgeattn import defaults, runtime

    assert runtime.GOLDEN_ATOL == defaults.ATOL


def test_cli_defaults_are_the_library_defaults():
    import inspect

    from edgeattn import bench, defaults, score, tasks, verify
    from edgeattn.cli import cli

    def default(command: str, option: str):
        return next(p.default for p in cli.commands[command].params if p.name == option)

    assert default("train", "epochs") == inspect.signature(tasks.train).parameters["epochs"].default
    assert default("export", "atol") == verify.DEFAULT_ATOL == defaults.ATOL
    from edgeattn import loading

    assert (
        default("export", "max_params")
        == inspect.signature(loading.load_model).parameters["max_params"].default
    )
    assert default("verify", "samples") == verify.DEFAULT_BATCHES[-1]
    assert default("bench", "seconds") == inspect.signature(bench.run).parameters["seconds"].default
    assert default("bench", "batches") == ",".join(
        map(str, inspect.signature(bench.run).parameters["batches"].default)
    )
    assert default("score", "batch_size") == inspect.signature(score.score).parameters["batch_size"].default
