"""No code from the working folder or from beside the model runs (issue 25, item 1).

A downloaded model often comes with files beside it, and users run edgeattn in that folder. `python -m` puts the
working folder first on `sys.path`, and Ray adds the driver's working folder to its workers' path, so a
`json.py`, `numpy.py` or `sitecustomize.py` there would run in every child process edgeattn starts (the sandbox,
the TensorFlow child of bench, the Ray workers of score). Each planted module writes a marker file when imported;
every command must leave no marker and still work.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from conftest import MODELS, run_cli

PLANTED = ("json", "numpy", "sitecustomize")


def plant(folder, markers) -> None:
    for name in PLANTED:
        marker = markers / f"{folder.name}-{name}"
        (folder / f"{name}.py").write_text(
            f"open({str(marker)!r}, 'w').write('imported')\nraise ImportError('planted {name} ran')\n"
        )


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """``dl/``: the shipped model as a user downloaded it, planted modules beside it; ``work/``: another
    working folder with planted modules; ``markers/``: where a planted module that runs leaves its mark."""
    root = tmp_path_factory.mktemp("isolation")
    dl, work, markers = root / "dl", root / "work", root / "markers"
    for folder in (dl, work, markers):
        folder.mkdir()
    shutil.copy(MODELS / "seed.keras", dl / "seed.keras")
    shutil.copy(MODELS / "seed.onnx", dl / "seed.onnx")
    np.save(dl / "x.npy", np.random.default_rng(0).random((3, 10, 1), dtype=np.float32))
    plant(dl, markers)
    plant(work, markers)
    return {"dl": dl, "work": work, "markers": markers}


# (working folder, arguments): in dl/ the model is named as a user in that folder would (a relative name); from
# work/ it is reached through a relative path.
COMMANDS = {
    "export": ("work", ["export", "../dl/seed.keras", "-o", "seed-out.onnx", "--no-golden"]),
    "verify": ("dl", ["verify", "seed.onnx", "--keras", "seed.keras", "--batches", "1", "--outputs-only"]),
    "inspect": ("dl", ["inspect", "seed.onnx"]),
    "inspect-from-elsewhere": ("work", ["inspect", "../dl/seed.onnx"]),
    "predict": ("dl", ["predict", "seed.onnx", "x.npy", "-o", "y.npy"]),
    "bench": ("dl", ["bench", "seed.onnx", "--keras", "seed.keras", "--seconds", "0.1", "--batch", "1"]),
    "score": ("dl", ["score", "seed.onnx", "x.npy", "-o", "scores", "--workers", "1", "--batch-size", "2"]),
}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_no_planted_module_runs_and_the_command_works(planted, command):
    where, args = COMMANDS[command]
    for marker in planted["markers"].iterdir():
        marker.unlink()
    done = run_cli(*args, cwd=planted[where])
    ran = sorted(p.name for p in planted["markers"].iterdir())
    assert ran == [], f"planted modules ran: {ran}\n{done.stderr[-2000:]}"
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


def test_the_outputs_are_where_the_user_named_them(planted):
    """Children run in a private folder, so every path they get must be absolute: the outputs still land in
    the user's working folder, and no child leaves anything behind there."""
    work, dl = planted["work"], planted["dl"]
    if not (work / "seed-out.onnx").exists():
        assert run_cli(*COMMANDS["export"][1], cwd=work).returncode == 0
    assert sorted(p.name for p in work.iterdir()) == sorted([f"{n}.py" for n in PLANTED] + ["seed-out.onnx"])
    expected = {"seed.keras", "seed.onnx", "x.npy", *(f"{n}.py" for n in PLANTED)}
    found = {p.name for p in dl.iterdir()}
    assert expected <= found
    assert all(name == "scores" or name.startswith("y.") for name in found - expected), found  # predict's
