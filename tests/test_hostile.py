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
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import MODELS, ROOT, run_cli

from edgeattn.core.files import PAUSE_ENV, TMP_MARK

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


def _save_tfsm_layer(path: Path, saved_model: Path, marker: Path) -> None:
    """A TFSMLayer over a SavedModel whose graph writes ``marker`` when it runs."""
    import keras
    import tensorflow as tf

    class Writer(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 10, 1], tf.float32)])
        def serve(self, x):
            tf.io.write_file(str(marker), "code ran")
            return tf.reshape(x, [-1, 10])

    writer = Writer()
    tf.saved_model.save(writer, str(saved_model))
    layer = keras.layers.TFSMLayer(str(saved_model), call_endpoint="serve", name="outside")
    keras.Sequential([keras.Input((10, 1)), layer]).save(path)
    marker.unlink(missing_ok=True)


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
    # Each payload below writes a marker file if its code ever runs (test_the_payloads_are_armed shows it).
    command = {"command": f"echo code ran > {d / 'os-system.marker'}"}
    os_system = {"module": "os", "class_name": "system", "config": command, "registered_name": "system", "name": "s", "inbound_nodes": []}  # fmt: skip
    _keras_with_config(d / "os-system.keras", _seed_config_with(os_system))
    popen = {"args": ["sh", "-c", f"echo code ran > {d / 'popen.marker'}"]}
    evil_module = {"module": "subprocess", "class_name": "Popen", "config": popen, "registered_name": "Popen", "name": "p", "inbound_nodes": []}  # fmt: skip
    _keras_with_config(d / "module.keras", _seed_config_with(evil_module))
    _save_tfsm_layer(d / "tfsmlayer.keras", d / "saved-model", d / "tfsm.marker")
    # CVE-2025-9906: a file that names Keras's own switch for unsafe loading (a Keras function, so a check of
    # modules alone passes it), beside a real Lambda.
    with zipfile.ZipFile(d / "lambda.keras") as zf:
        parts = {name: zf.read(name) for name in zf.namelist()}
    config = json.loads(parts["config.json"])
    unlock = {"module": "keras.config", "class_name": "function", "config": "enable_unsafe_deserialization", "registered_name": "enable_unsafe_deserialization"}  # fmt: skip
    config["config"]["layers"].append({"module": "keras.layers", "class_name": "Activation", "config": {"name": "unlock", "activation": unlock}})  # fmt: skip
    parts["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(d / "safe-mode-off.keras", "w") as zf:
        for name, data in parts.items():
            zf.writestr(name, data)
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
        Case(
            "export a directory",
            ("export", "{d}/folder.keras", "-o", "{out}"),
            2,
            "is a folder without saved_model.pb: not a SavedModel",
        ),
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
        Case("config naming os.system", ("export", "{d}/os-system.keras", "-o", "{out}"), 2, "module 'os'"),
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
            "refused to load 2 layers",
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
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    before = sorted(p.name for p in hostile.iterdir())
    done = subprocess.run(
        [str(Path(sys.executable).parent / "edgeattn"), *argv],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
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
    assert len([line for line in lines if not line.startswith("  ")]) <= 2, (
        lines
    )  # error, hint; details indented
    assert not marker.exists(), "code from the file ran"
    assert not list(hostile.glob("*.marker")), "code from the file ran"
    cwd.rmdir()  # fails if anything was written in the working directory
    assert not list(tmp_path.glob("*")), "an output (or a temporary file) was left behind"
    assert sorted(p.name for p in hostile.iterdir()) == before, "something was written beside the input"


def test_the_payloads_are_armed(hostile, tmp_path, monkeypatch):
    """Without edgeattn's checks each payload would write its marker."""
    import importlib

    import keras

    from edgeattn.convert.loading import load_model
    from edgeattn.core.errors import EdgeAttnError

    # Lambdas (Keras 2 bytecode, nested, safe mode switched off inside the file): Keras 3 runs them when asked
    # to load unsafely, as edgeattn does with --unsafe.
    for name in ("keras2-lambda.h5", "nested-lambda.keras", "safe-mode-off.keras"):
        marker = tmp_path / f"{name}.marker"
        monkeypatch.setenv("EDGEATTN_MARKER", str(marker))
        try:
            load_model(hostile / name, unsafe=True)
        except EdgeAttnError:  # the unlock "activation" fails when called, after the Lambda has run
            assert name == "safe-mode-off.keras"
        assert marker.read_text() == "code ran", name
    # TFSMLayer: Keras loads the outside SavedModel when unsafe; its graph writes the marker when called.
    model = keras.saving.load_model(hostile / "tfsmlayer.keras", safe_mode=False, compile=False)
    model(np.zeros((1, 10, 1), np.float32))
    assert (hostile / "tfsm.marker").read_text() == "code ran"
    (hostile / "tfsm.marker").unlink()
    # Module payloads: Keras < 3.9 imported the named module and called the named attribute with the config
    # (CVE-2025-1550); Keras 3.9+ refuses modules outside Keras even when unsafe, so run them as it did.
    for name, marker in (("os-system.keras", "os-system.marker"), ("module.keras", "popen.marker")):
        with zipfile.ZipFile(hostile / name) as zf:
            payload = json.loads(zf.read("config.json"))["config"]["layers"][1]
        with pytest.raises((TypeError, ValueError), match=r"deserialize|locate"):
            keras.saving.load_model(hostile / name, safe_mode=False, compile=False)
        result = getattr(importlib.import_module(payload["module"]), payload["class_name"])(
            **payload["config"]
        )
        getattr(result, "wait", lambda: None)()
        assert (hostile / marker).read_text().strip() == "code ran", name
        (hostile / marker).unlink()


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
    from edgeattn.core import sandbox
    from edgeattn.core.errors import InputError

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


def test_containment_memory_limit(tmp_path, monkeypatch):
    """A crafted allocation: a 400 MB dataset that the file stores as a fill value (a few KB on disk), which
    the reader allocates in full. Under a 256 MB limit the same file without it is read; with it, the limit
    stops the reader; under 1024 MB it is read: the limit, not something else, is what stopped it."""
    import h5py

    from edgeattn.core import sandbox
    from edgeattn.core.errors import InputError

    plain = LEGACY / "a41-lstm-luong.h5"
    bomb = tmp_path / "bomb.h5"
    shutil.copy(plain, bomb)
    with h5py.File(bomb, "r+") as f:
        f.create_dataset(
            "model_weights/bomb", shape=(100 << 20,), dtype="float32", chunks=(1 << 20,), fillvalue=0
        )
    assert bomb.stat().st_size < plain.stat().st_size + 100_000
    monkeypatch.setenv("EDGEATTN_PARSE_MEMORY_MB", "256")
    assert sandbox.parse("model", plain)["format"] == "h5"
    with pytest.raises(
        InputError, match=r"bomb\.h5: reading it needs more than 256 MB \(EDGEATTN_PARSE_MEMORY_MB\)"
    ):
        sandbox.parse("model", bomb)
    monkeypatch.setenv("EDGEATTN_PARSE_MEMORY_MB", "1024")
    assert sandbox.parse("model", bomb)["format"] == "h5"


def _kill_while_writing(*argv: str) -> Path:
    """Run the CLI, SIGKILL it while it is half-way through writing its output; returns the temporary path."""
    env = {**os.environ, PAUSE_ENV: "60"}
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "edgeattn"), *argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    line = proc.stderr.readline()
    while line and "paused writing" not in line:
        line = proc.stderr.readline()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert "paused writing" in line, "the run ended before it wrote anything"
    tmp = Path(line.split("paused writing ", 1)[1].strip())
    assert tmp.exists()  # the kill landed during the write itself
    return tmp


@pytest.mark.parametrize("existing", [False, True], ids=["new file", "over a file with --force"])
def test_an_export_killed_while_writing_leaves_no_partial_file(existing, tmp_path):
    out = tmp_path / "seed.onnx"
    if existing:
        out.write_bytes(b"the old model")
    tmp = _kill_while_writing("export", str(SEED_KERAS), "-o", str(out), "--force")
    assert 0 < tmp.stat().st_size < SEED_ONNX.stat().st_size  # half of the model was written...
    assert (out.read_bytes() == b"the old model") if existing else not out.exists()  # ...and not in place
    done = run_cli("export", SEED_KERAS, "-o", out, "--force")
    assert done.returncode == 0, done.stderr
    onnx.checker.check_model(onnx.load(out), full_check=True)
    assert not list(tmp_path.glob(f".*{TMP_MARK}*"))  # the next run removed what the killed one left
    what = "the old file, unchanged" if existing else "none"
    ROWS.append((f"export killed (SIGKILL) while writing, {'--force over a file' if existing else 'new file'}", "export", -9, f"output: {what}; temp file removed by the next run"))  # fmt: skip


def test_a_web_folder_killed_while_writing_leaves_no_partial_folder(tmp_path):
    out = tmp_path / "site"
    tmp = _kill_while_writing("web", str(SEED_ONNX), "-o", str(out))
    assert tmp.is_dir() and not out.exists()
    done = run_cli("web", SEED_ONNX, "-o", out)
    assert done.returncode == 0, done.stderr
    assert (out / "model.onnx").read_bytes() == SEED_ONNX.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site"]
    ROWS.append(("web killed (SIGKILL) while writing", "web", -9, "output: none; temp folder removed by the next run"))  # fmt: skip


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
