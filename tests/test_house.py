"""The package's structure (issue 27): folders by the side they serve, imported only downwards; no import cycle
among its modules (module-level and function-level imports alike); no module too long to read; the sandbox's
child side imported by nothing (it runs as ``python -m edgeattn.convert.sandbox_child``); the public API where
the README shows it."""

from __future__ import annotations

import ast

from conftest import ROOT

PACKAGE = ROOT / "edgeattn"
LEVELS = {"core": 0, "graphs": 1, "deploy": 2, "convert": 3, "cli": 4}
LIMIT, RUNTIME_LIMIT = 400, 700


def _modules() -> dict:
    """dotted module name below edgeattn (``graphs.fusion``; a folder's ``__init__`` is the folder) -> path."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if parts:
            found[".".join(parts)] = path
    return found


def imports() -> dict[str, set[str]]:
    """module -> the package's modules it imports, anywhere in its code."""
    modules = _modules()
    edges: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if (
                isinstance(node, ast.ImportFrom)
                and (node.module or "").startswith("edgeattn")
                and not node.level
            ):
                base = node.module[len("edgeattn") :].lstrip(".")
                for alias in node.names:  # `from edgeattn.graphs import fusion`: the module graphs.fusion
                    full = f"{base}.{alias.name}".lstrip(".")
                    names.append(full if full in modules else base)
            elif isinstance(node, ast.Import):
                names = [a.name[len("edgeattn.") :] for a in node.names if a.name.startswith("edgeattn.")]
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
    assert [m for m, targets in imports().items() if "convert.sandbox_child" in targets] == []


def _level(module: str) -> int | None:
    return LEVELS.get(module.split(".")[0]) if module.split(".")[0] in LEVELS else None


def test_no_folder_imports_a_higher_one():
    edges = imports()
    assert set(LEVELS) <= set(edges)
    upward = [
        (m, t)
        for m, ts in edges.items()
        for t in ts
        if None not in (_level(m), _level(t)) and _level(t) > _level(m)
    ]
    assert upward == []


def test_the_level_check_finds_an_upward_import(monkeypatch):  # the check above can fail
    import sys

    edges = {"graphs.shapes": {"convert.verify"}, "convert.verify": set()}
    monkeypatch.setattr(sys.modules[__name__], "imports", lambda: {**{key: set() for key in LEVELS}, **edges})
    try:
        test_no_folder_imports_a_higher_one()
    except AssertionError:
        return
    raise AssertionError("an import from graphs up to convert went unnoticed")


def test_the_runtime_imports_nothing_of_edgeattn_but_its_optional_fusion():
    assert imports()["runtime"] <= {"graphs.ortfusion", "graphs"}


def test_every_module_is_short_enough_to_read():
    sizes = {m: len(path.read_text().splitlines()) for m, path in _modules().items()}
    assert {m: n for m, n in sizes.items() if n > (RUNTIME_LIMIT if m == "runtime" else LIMIT)} == {}


def test_each_folder_says_what_it_holds_and_what_it_may_import():
    for folder in LEVELS:
        doc = ast.get_docstring(ast.parse((PACKAGE / folder / "__init__.py").read_text())) or ""
        assert len(doc) > 200 and "may import" in doc, folder


def test_the_public_api_is_where_the_readme_shows_it():
    import edgeattn
    from edgeattn.export import ExportOptions, export
    from edgeattn.layers import Attention, NadarayaWatson
    from edgeattn.runtime import Predictor
    from edgeattn.verify import compare, make_cases, verify_against_keras

    assert callable(export) and ExportOptions().opset >= 13 and callable(verify_against_keras)
    assert callable(compare) and callable(make_cases) and Predictor.__name__ == "Predictor"
    assert edgeattn.Attention is Attention and edgeattn.NadarayaWatson is NadarayaWatson
    assert issubclass(edgeattn.EdgeAttnError, Exception) and edgeattn.__version__


def test_the_runtime_copy_of_the_default_tolerance_agrees():
    """runtime.py imports nothing from edgeattn (it is copied into apps), so it keeps its own copy."""
    from edgeattn import runtime
    from edgeattn.core import defaults

    assert runtime.GOLDEN_ATOL == defaults.ATOL


def test_cli_defaults_are_the_library_defaults():
    import inspect

    from edgeattn.cli import cli
    from edgeattn.convert import tasks, verify
    from edgeattn.core import defaults
    from edgeattn.deploy import bench, score

    def default(command: str, option: str):
        return next(p.default for p in cli.commands[command].params if p.name == option)

    assert default("train", "epochs") == inspect.signature(tasks.train).parameters["epochs"].default
    assert default("export", "atol") == verify.DEFAULT_ATOL == defaults.ATOL
    from edgeattn.convert import loading

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
