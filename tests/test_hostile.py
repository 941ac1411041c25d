"""Hostile and broken inputs, through the installed CLI: no code run, nothing lost, one clear error each time.

The hostile files are made here at test time (``hostile`` fixture); the Keras 2 Lambda files are committed
fixtures from scripts/make_legacy_fixtures.py (TF 2.15 marshalled bytecode). Every Lambda writes the file
named by ``$EDGEATTN_MARKER`` if its code ever runs; ``test_the_lambda_fixtures_are_armed`` proves that it
would. Set ``EDGEATTN_HOSTILE_TABLE=FILE`` to get the cases as a Markdown table.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import MODELS, ROOT, run_cli

from edgeattn.files import TMP_MARK

LEGACY = ROOT / "tests" / "fixtures" / "legacy"
SEED_KERAS = MODELS / "seed.keras"
SEED_ONNX = MODELS / "seed.onnx"
ROWS: list[tuple[str, str, int, str]] = []


@dataclass(frozen=True)
class Case:
    name: str
    argv: tuple  # CLI arguments; "{d}" is the hostile folder, "{out}" the output file
    exit_code: int
    message: str  # a piece of the error line
    out: str | None = "out.onnx"


def _marker_lambda():
    """A lambda (Keras saves its bytecode) that writes $EDGEATTN_MARKER when it runs, if that is set."""
    return lambda x: (
        __import__("os").environ.get("EDGEATTN_MARKER")
        and __import__("pathlib").Path(__import__("os").environ["EDGEATTN_MARKER"]).write_text("code ran"),
        x,
    )[1]


def _save_keras_with_lambda(path: Path, nested: bool) -> None:
    import keras

    fn = _marker_lambda()
    if nested:
        inner = keras.Sequential([keras.Input((10, 1)), keras.layers.Lambda(fn, name="evil")], name="inner")
        inputs = keras.Input((10, 1))
        model = keras.Model(inputs, keras.layers.Dense(1)(keras.layers.Flatten()(inner(inputs))))
    else:
        model = keras.Sequential(
            [keras.Input((10, 1)), keras.layers.Lambda(fn, name="evil"), keras.layers.Flatten()]
        )
    model.save(path)


def _keras_with_config(path: Path, config: dict) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("config.json", json.dumps(config))
        zf.writestr("metadata.json", json.dumps({"keras_version": "3.15.1"}))


def _seed_config_with(layer: dict) -> dict:
    with zipfile.ZipFile(SEED_KERAS) as zf:
        config = json.loads(zf.read("config.json"))
    config["config"]["layers"].insert(1, layer)
    return config


def _onnx_with_external(path: Path, location: str) -> None:
    model = onnx.load(SEED_ONNX)
    tensor = max(model.graph.initializer, key=lambda t: len(t.raw_data))
    tensor.ClearField("raw_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    del tensor.external_data[:]
    tensor.external_data.add(key="location", value=location)
    path.write_bytes(model.SerializeToString())


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> Path:
    """A folder of hostile and broken files, made fresh."""
    d = tmp_path_factory.mktemp("hostile")
    rng = np.random.default_rng(0)
    sources = {".h5": LEGACY / "a500-lstm-luong.h5", ".keras": SEED_KERAS, ".onnx": SEED_ONNX}
    for suffix, source in sources.items():
        data = source.read_bytes()
        (d / f"empty{suffix}").write_bytes(b"")
        (d / f"one-byte{suffix}").write_bytes(data[:1])
        (d / f"half{suffix}").write_bytes(data[: len(data) // 2])
        (d / f"random{suffix}").write_bytes(rng.bytes(4096))
    (d / "csv.h5").write_text("a,b\n1,2\n")
    (d / "folder.keras").mkdir()
    os.environ.pop("EDGEATTN_MARKER", None)
    _save_keras_with_lambda(d / "lambda.keras", nested=False)
    _save_keras_with_lambda(d / "nested-lambda.keras", nested=True)
    os_system = {"module": "os", "class_name": "function", "config": "system", "registered_name": "system"}
    dense = {"module": "keras.layers", "class_name": "Dense", "config": {"name": "d", "units": 1, "activation": os_system}}  # fmt: skip
    _keras_with_config(d / "os-system.keras", _seed_config_with(dense))
    evil_module = {"module": "subprocess", "class_name": "Popen", "config": {"name": "p"}, "registered_name": "Popen"}  # fmt: skip
    _keras_with_config(d / "module.keras", _seed_config_with(evil_module))
    tfsm = {"module": "keras.layers", "class_name": "TFSMLayer", "config": {"name": "outside", "filepath": "/tmp/sm"}}  # fmt: skip
    _keras_with_config(d / "tfsmlayer.keras", _seed_config_with(tfsm))
    # CVE-2025-8747/9906: a file that tries to switch safe mode off from inside, around a Lambda.
    lam = {"module": "keras.layers", "class_name": "Lambda", "config": {"name": "evil", "function": {"class_name": "__lambda__", "config": {"code": "AAAA"}}, "safe_mode": False}}  # fmt: skip
    _keras_with_config(d / "safe-mode-off.keras", _seed_config_with(lam))
    for name in ("lambda.h5", "nested-lambda.h5"):
        shutil.copy(LEGACY / name, d / f"keras2-{name}")

    _onnx_with_external(d / "dotdot.onnx", "../x.bin")
    (d.parent / "x.bin").write_bytes(b"\0" * 1024 * 1024)
    _onnx_with_external(d / "etc-passwd.onnx", "/etc/passwd")
    (d / "link.bin").symlink_to("/etc/passwd")
    _onnx_with_external(d / "symlink.onnx", "link.bin")
    outside = d.parent / "outside.bin"
    outside.write_bytes(b"\0" * 1024 * 1024)
    os.link(outside, d / "hard.bin")
    _onnx_with_external(d / "hardlink.onnx", "hard.bin")
    model = onnx.load(SEED_ONNX)
    tanh = next(n for n in model.graph.node if n.op_type == "Tanh")
    tanh.op_type, tanh.domain = "FastGelu", "com.microsoft"
    model.opset_import.add(domain="com.microsoft", version=1)
    (d / "ms-op.onnx").write_bytes(model.SerializeToString())

    np.save(d / "wrong-shape.npy", np.zeros((2, 9, 1), np.float32))
    np.save(d / "nan.npy", np.full((2, 10, 1), np.nan, np.float32))
    (d / "strings.csv").write_text("a,b,c,d,e,f,g,h,i,j\n" * 2)
    np.save(d / "wrong-dtype.npy", np.array([["x"] * 10] * 2))
    np.save(d / "x.npy", np.zeros((2, 10, 1), np.float32))
    return d


def _cases() -> list[Case]:
    cases = []
    for suffix in (".h5", ".keras"):
        for stem in ("empty", "one-byte", "half", "random"):
            cases.append(
                Case(
                    f"export {stem}{suffix}", ("export", f"{{d}}/{stem}{suffix}", "-o", "{out}"), 2, "error: "
                )
            )
    for stem in ("empty", "one-byte", "half", "random"):
        for command in ("inspect", "verify"):
            cases.append(Case(f"{command} {stem}.onnx", (command, f"{{d}}/{stem}.onnx"), 2, "error: ", None))
        cases.append(Case(f"predict {stem}.onnx", ("predict", f"{{d}}/{stem}.onnx", "{d}/x.npy", "-o", "{out}"), 2, "error: ", "y.npy"))  # fmt: skip
    cases += [
        Case("export csv named .h5", ("export", "{d}/csv.h5", "-o", "{out}"), 2, "neither a .keras"),
        Case("export a directory", ("export", "{d}/folder.keras", "-o", "{out}"), 2, "is a directory"),
        Case("export a missing file", ("export", "{d}/missing.keras", "-o", "{out}"), 2, "no such file"),
        Case(
            "predict a directory",
            ("predict", "{d}/folder.keras", "{d}/x.npy", "-o", "{out}"),
            2,
            "is a directory",
            "y.npy",
        ),
        Case("Lambda in .keras", ("export", "{d}/lambda.keras", "-o", "{out}"), 2, "Lambda layer 'evil'"),
        Case(
            "Lambda in Sequential in functional (.keras)",
            ("export", "{d}/nested-lambda.keras", "-o", "{out}"),
            2,
            "Lambda layer 'evil' in Sequential 'inner'",
        ),
        Case(
            "Lambda in Keras 2 .h5 (bytecode)",
            ("export", "{d}/keras2-lambda.h5", "-o", "{out}"),
            2,
            "Lambda layer",
        ),
        Case(
            "Lambda in Sequential in functional (.h5)",
            ("export", "{d}/keras2-nested-lambda.h5", "-o", "{out}"),
            2,
            "in Sequential 'inner'",
        ),
        Case("config naming os.system", ("export", "{d}/os-system.keras", "-o", "{out}"), 2, "os.system"),
        Case(
            "config naming subprocess.Popen", ("export", "{d}/module.keras", "-o", "{out}"), 2, "'subprocess'"
        ),
        Case(
            "TFSMLayer (outside SavedModel)",
            ("export", "{d}/tfsmlayer.keras", "-o", "{out}"),
            2,
            "TFSMLayer is not a layer",
        ),
        Case(
            "safe mode switched off inside the file",
            ("export", "{d}/safe-mode-off.keras", "-o", "{out}"),
            2,
            "Lambda layer 'evil'",
        ),
    ]
    for stem, why in (("dotdot", "climbs out"), ("etc-passwd", "absolute path"), ("symlink", "symbolic link"), ("hardlink", "hard link")):  # fmt: skip
        cases.append(Case(f"inspect external data {stem}", ("inspect", f"{{d}}/{stem}.onnx"), 2, why, None))
        cases.append(Case(f"predict external data {stem}", ("predict", f"{{d}}/{stem}.onnx", "{d}/x.npy", "-o", "{out}"), 2, why, "y.npy"))  # fmt: skip
    cases += [
        Case(
            "verify com.microsoft op",
            ("verify", "{d}/ms-op.onnx", "--keras", str(SEED_KERAS)),
            1,
            "com.microsoft",
            None,
        ),
        Case(
            "predict wrong shape",
            ("predict", str(SEED_ONNX), "{d}/wrong-shape.npy", "-o", "{out}"),
            2,
            "axis 1 is 9",
            "y.npy",
        ),
        Case(
            "predict wrong dtype",
            ("predict", str(SEED_ONNX), "{d}/wrong-dtype.npy", "-o", "{out}"),
            2,
            "must be numbers",
            "y.npy",
        ),
        Case(
            "predict strings in csv",
            ("predict", str(SEED_ONNX), "{d}/strings.csv", "-o", "{out}"),
            2,
            "error: ",
            "y.npy",
        ),
        Case("predict NaN", ("predict", str(SEED_ONNX), "{d}/nan.npy", "-o", "{out}"), 2, "NaN", "y.npy"),
    ]
    return cases


CASES = _cases()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_input_gets_one_clear_error(case, hostile, tmp_path, monkeypatch):
    marker = tmp_path / "marker"
    monkeypatch.setenv("EDGEATTN_MARKER", str(marker))
    out = tmp_path / case.out if case.out else None
    argv = [str(a).format(d=hostile, out=out) for a in case.argv]
    done = subprocess.run(
        [str(Path(sys.executable).parent / "edgeattn"), *argv], capture_output=True, text=True, timeout=300
    )
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    ROWS.append(
        (
            case.name,
            " ".join(a.replace(str(hostile) + "/", "") for a in argv[:2]),
            done.returncode,
            lines[0].replace(f"{hostile}/", "") if lines else "",
        )
    )
    assert done.returncode == case.exit_code, done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert lines and lines[0].startswith("error: ") and case.message in lines[0], lines
    assert len(lines) <= 2, lines  # the error and at most a hint
    assert not marker.exists(), "code from the file ran"
    assert not list(tmp_path.glob("*")), "an output (or a temporary file) was left behind"


def test_the_lambda_fixtures_are_armed(hostile, tmp_path, monkeypatch):
    """Without the checks the Lambdas would run: with --unsafe, Keras 3 runs the file's code."""
    from edgeattn.loading import load_model

    for name in ("keras2-lambda.h5", "nested-lambda.keras"):
        marker = tmp_path / f"{name}.marker"
        monkeypatch.setenv("EDGEATTN_MARKER", str(marker))
        load_model(hostile / name, unsafe=True)
        assert marker.exists(), name


def _read_only_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    for candidate in (folder, Path("/sys")):  # root writes into 0o555 folders; sysfs is a read-only mount
        try:
            (candidate / ".edgeattn-probe").touch()
            (candidate / ".edgeattn-probe").unlink()
        except OSError:
            return candidate
    pytest.skip("no read-only folder available to this user")


def test_read_only_destination_folder(tmp_path):
    folder = _read_only_folder(tmp_path)
    np.save(tmp_path / "x.npy", np.zeros((1, 10, 1), np.float32))
    done = run_cli("predict", SEED_ONNX, tmp_path / "x.npy", "-o", folder / "y.npy")
    assert done.returncode == 2 and "not writable" in done.stderr
    assert not (folder / "y.npy").exists()
    ROWS.append(("read-only destination folder", "predict", done.returncode, done.stderr.splitlines()[0]))


def test_a_failed_run_with_force_keeps_the_existing_file(hostile, tmp_path):
    out = tmp_path / "out.onnx"
    out.write_bytes(b"precious")
    done = run_cli("export", hostile / "lambda.keras", "-o", out, "--force")
    assert done.returncode == 2
    assert out.read_bytes() == b"precious"
    done = run_cli("export", SEED_KERAS, "-o", out)
    assert done.returncode == 2 and "exists" in done.stderr and out.read_bytes() == b"precious"
    ROWS.append(("existing output without --force", "export", done.returncode, done.stderr.splitlines()[0]))


def test_containment_reports_a_crashing_reader(tmp_path, monkeypatch):
    """A reader that dies of a signal (as h5py can on a crafted file) becomes one error; we live on."""
    from edgeattn import sandbox
    from edgeattn.errors import InputError

    crasher = tmp_path / "python"
    crasher.write_text("#!/bin/sh\nkill -SEGV $$\n")
    crasher.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(crasher))
    with pytest.raises(InputError, match=r"crashed the HDF5/zip reader \(SIGSEGV\)"):
        sandbox.parse("model", LEGACY / "a41-lstm-luong.h5")
    hanger = tmp_path / "python"
    hanger.write_text("#!/bin/sh\nexec sleep 30\n")
    monkeypatch.setenv("EDGEATTN_PARSE_TIMEOUT", "0.5")
    with pytest.raises(InputError, match=r"did not finish within 0\.5 s"):
        sandbox.parse("onnx", SEED_ONNX)


def test_containment_memory_limit(monkeypatch):
    from edgeattn import sandbox
    from edgeattn.errors import InputError

    monkeypatch.setenv("EDGEATTN_PARSE_MEMORY_MB", "64")  # the child cannot even load numpy within it
    with pytest.raises(
        InputError, match=r"seed\.onnx: reading it needs more than 64 MB \(EDGEATTN_PARSE_MEMORY_MB\)"
    ):
        sandbox.parse("onnx", SEED_ONNX)


@pytest.mark.parametrize("moment", [0.5, 2.5, 4.0])
def test_a_killed_export_leaves_nothing_or_a_valid_model(moment, tmp_path):
    out = tmp_path / "seed.onnx"
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "edgeattn"), "export", str(SEED_KERAS), "-o", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(moment)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    if out.exists():
        onnx.checker.check_model(onnx.load(out), full_check=True)
    leftovers = list(tmp_path.glob(f".*{TMP_MARK}*"))
    if leftovers:  # the next run cleans up what the killed one left
        np.save(tmp_path / "x.npy", np.zeros((1, 10, 1), np.float32))
        done = run_cli("export", SEED_KERAS, "-o", out, "--force")
        assert done.returncode == 0, done.stderr
        assert not list(tmp_path.glob(f".*{TMP_MARK}*"))
    ROWS.append((f"export killed (SIGKILL) after {moment} s", "export", -9, "output: " + ("complete, valid" if out.exists() else "none")))  # fmt: skip


def test_a_write_killed_midway_leaves_no_partial_file(tmp_path):
    """SIGKILL while the bytes are being written (slowed down in the child): the target never appears."""
    out = tmp_path / "model.onnx"
    script = (
        "import os, sys, time\n"
        "real = os.fsync\n"
        "os.fsync = lambda fd: (print('writing', flush=True), time.sleep(30))\n"
        "from edgeattn.files import write_atomic\n"
        f"write_atomic({str(out)!r}, b'x' * 10_000_000)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists()
    assert len(list(tmp_path.glob(f".*{TMP_MARK}*"))) == 1  # the killed run's temporary file...
    from edgeattn.files import write_atomic

    write_atomic(out, b"complete")
    assert out.read_bytes() == b"complete"
    assert not list(tmp_path.glob(f".*{TMP_MARK}*"))  # ...is removed by the next write
    ROWS.append(("write killed (SIGKILL) mid-write", "write_atomic", -9, "output: none; temp file removed by the next run"))  # fmt: skip


def teardown_module(module):
    table = os.environ.get("EDGEATTN_HOSTILE_TABLE")
    if table:
        lines = ["| case | command | exit | first line |", "| --- | --- | --- | --- |"]
        lines += [f"| {n} | `{c}` | {e} | {m.replace('|', '/')} |" for n, c, e, m in ROWS]
        Path(table).write_text("\n".join(lines) + "\n")


def test_external_data_inside_the_folder_is_fine(tmp_path):
    model = onnx.load(SEED_ONNX)
    path = tmp_path / "seed.onnx"
    onnx.save(model, path, save_as_external_data=True, location="seed.data", size_threshold=1024)
    np.save(tmp_path / "x.npy", np.zeros((2, 10, 1), np.float32))
    done = run_cli("predict", path, tmp_path / "x.npy", "-o", tmp_path / "y.npy")
    assert done.returncode == 0, done.stderr
    shown = run_cli("inspect", path)
    assert shown.returncode == 0 and "seed.data" in shown.stdout
