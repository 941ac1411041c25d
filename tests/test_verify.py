"""verify: passes a faithful export, fails broken ones with exit 1 and a message that names the problem."""

from __future__ import annotations

import json

import numpy as np
import onnx
from conftest import run_cli
from onnx import numpy_helper

from edgeattn.convert.export import export


def _largest_initializer_moved(src, dst, delta=0.5):
    model = onnx.load(src)
    biggest = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    array = numpy_helper.to_array(biggest).copy()
    array.flat[0] += delta
    biggest.CopyFrom(numpy_helper.from_array(array, biggest.name))
    onnx.save(model, dst)


def test_verify_passes_a_faithful_export(seed_onnx, seed_keras, tmp_path):
    report = tmp_path / "r.json"
    result = run_cli("verify", seed_onnx, "--keras", seed_keras, "--json", report)
    assert result.returncode == 0, result.stderr
    assert "verify: pass" in result.stdout
    data = json.loads(report.read_text())
    assert data["passed"] is True
    assert {o["name"] for o in data["outputs"]} == {"y", "attention_weights"}
    assert all(o["max_abs"] <= 1e-4 and "max_rel" in o for o in data["outputs"])
    assert data["cases"] == ["batch 1", "batch 7", "batch 64"]
    assert data["inputs"] == "3 case(s): batch 1, 7, 64"


def test_verify_catches_a_moved_weight(seed_onnx, seed_keras, tmp_path):
    broken = tmp_path / "moved.onnx"
    _largest_initializer_moved(seed_onnx, broken)
    result = run_cli("verify", broken, "--keras", seed_keras)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "FAIL" in result.stdout
    # the largest initializer is the LSTM's recurrent matrix: the layer-by-layer check says where it starts
    assert result.stderr.startswith("error: verify failed: layer 'lstm' is the first to diverge")


def test_verify_catches_swapped_outputs(seed_onnx, seed_keras, tmp_path):
    model = onnx.load(seed_onnx)
    outputs = list(model.graph.output)
    del model.graph.output[:]
    model.graph.output.extend([outputs[1], outputs[0]])
    broken = tmp_path / "swapped.onnx"
    onnx.save(model, broken)
    result = run_cli("verify", broken, "--keras", seed_keras)
    assert result.returncode == 1
    assert "error: verify failed" in result.stderr


def test_verify_finds_the_source_from_metadata(seed_onnx, seed_keras, tmp_path):
    import shutil

    shutil.copy(seed_onnx, tmp_path / "seed.onnx")
    shutil.copy(seed_keras, tmp_path / "seed.keras")  # recorded in the metadata, beside the model
    result = run_cli("verify", tmp_path / "seed.onnx")
    assert result.returncode == 0, result.stderr
    assert f"source: {tmp_path / 'seed.keras'} (sha256 matches the export)" in result.stdout


def test_verify_golden_runs_without_tensorflow(seed_onnx):
    import subprocess
    import sys

    blocker = (
        "import sys; sys.modules['tensorflow'] = None; sys.modules['keras'] = None; sys.modules['tf2onnx'] = None\n"
        "from edgeattn.cli import main; main(['verify', sys.argv[1], '--golden'])"
    )
    result = subprocess.run([sys.executable, "-c", blocker, str(seed_onnx)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "verify --golden: pass" in result.stdout


def test_verify_golden_fails_on_a_moved_weight(seed_onnx, tmp_path):
    broken = tmp_path / "moved.onnx"
    _largest_initializer_moved(seed_onnx, broken)
    result = run_cli("verify", broken, "--golden")
    assert result.returncode == 1
    assert "FAIL" in result.stdout


def test_verify_fails_a_vendor_domain_node(seed_onnx, seed_keras, tmp_path):
    model = onnx.load(seed_onnx)
    relu = next(i for i, n in enumerate(model.graph.node) if n.op_type == "Tanh")
    node = model.graph.node[relu]
    node.op_type, node.domain = "FastGelu", "com.microsoft"
    model.opset_import.append(onnx.helper.make_opsetid("com.microsoft", 1))
    broken = tmp_path / "vendor.onnx"
    onnx.save(model, broken)
    result = run_cli("verify", broken, "--keras", seed_keras)
    assert result.returncode == 1
    assert "com.microsoft:FastGelu" in result.stdout + result.stderr


def test_verify_fails_a_wrong_opset_import(seed_onnx, seed_keras, tmp_path):
    model = onnx.load(seed_onnx)
    model.opset_import[0].version = 7  # Softmax/Squeeze/LSTM as used need a newer opset
    broken = tmp_path / "opset.onnx"
    onnx.save(model, broken)
    result = run_cli("verify", broken, "--keras", seed_keras)
    assert result.returncode == 1, result.stderr
    assert "onnx.checker" in result.stdout + result.stderr


def test_a_changed_source_is_refused_unless_named(seed_onnx, seed_keras, tmp_path):
    import shutil

    from edgeattn.convert.tasks import build_seed_model

    shutil.copy(seed_onnx, tmp_path / "seed.onnx")
    build_seed_model(seed=11).save(tmp_path / "seed.keras")  # same name, other weights
    result = run_cli("verify", tmp_path / "seed.onnx")
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.splitlines() == [
        f"error: {tmp_path / 'seed.keras'} is not the file that was exported (sha256 differs)",
        f"hint: to check this file anyway, name it: --keras {tmp_path / 'seed.keras'}",
    ]
    assert result.stdout == ""  # nothing was compared
    named = run_cli("verify", tmp_path / "seed.onnx", "--keras", tmp_path / "seed.keras")
    assert named.returncode == 1  # named, it is checked: the numbers disagree
    assert "error: verify failed" in named.stderr


def _recording(seed_onnx, folder, **meta):
    """A copy of the seed export in ``folder`` whose metadata records other source keys."""
    model = onnx.load(seed_onnx)
    props = {p.key: p.value for p in model.metadata_props}
    props.update(meta)
    del model.metadata_props[:]
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(model, folder / "m.onnx")
    return folder / "m.onnx"


def test_a_recorded_absolute_source_path_is_not_followed(seed_onnx, seed_keras, tmp_path):
    onnx_path = _recording(seed_onnx, tmp_path / "dl", **{"edgeattn.source": str(seed_keras)})
    result = run_cli("verify", onnx_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith(
        f"error: {onnx_path} records its source as {str(seed_keras)!r}, not a plain"
    )
    assert result.stderr.splitlines()[1] == "hint: pass the Keras file with --keras SRC"


def test_a_recorded_relative_path_out_of_the_folder_is_not_followed(seed_onnx, seed_keras, tmp_path):
    import shutil

    shutil.copy(seed_keras, tmp_path / "seed.keras")  # the right file, one folder up: still not followed
    onnx_path = _recording(seed_onnx, tmp_path / "dl", **{"edgeattn.source_path": "../seed.keras"})
    result = run_cli("verify", onnx_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.splitlines()[0] == (
        f"error: the source seed.keras recorded in {onnx_path} is not next to it (recorded at '../seed.keras', "
        "not followed)"
    )
    dotdot = _recording(seed_onnx, tmp_path / "dl2", **{"edgeattn.source": "../seed.keras"})
    result = run_cli("verify", dotdot)
    assert result.returncode == 2 and "not a plain file name" in result.stderr
    assert run_cli("verify", onnx_path, "--keras", tmp_path / "seed.keras").returncode == 0  # named, it is


def test_a_source_that_is_a_symlink_out_of_the_folder_is_not_followed(seed_onnx, seed_keras, tmp_path):
    onnx_path = _recording(seed_onnx, tmp_path / "dl")
    (tmp_path / "dl" / "seed.keras").symlink_to(seed_keras)
    result = run_cli("verify", onnx_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "is not next to it" in result.stderr


def test_verify_samples_and_free_lengths_options(seed_onnx, seed_keras):
    result = run_cli("verify", seed_onnx, "--keras", seed_keras, "--samples", "100")
    assert result.returncode == 0, result.stderr
    assert "batch 1, 7, 100" in result.stdout


def test_a_moved_lstm_weight_fails_verify_naming_the_lstm_layer(seed_keras, tmp_path):
    """The review's case: a model trained for one epoch, one weight of the LSTM's recurrent matrix moved by 0.5
    in the ONNX file. The output barely moves; the layer-by-layer check names the LSTM."""
    import json

    from onnx import numpy_helper

    out = tmp_path / "m.onnx"
    export(seed_keras, out)
    model = onnx.load(out)
    recorded = json.loads({p.key: p.value for p in model.metadata_props}["edgeattn.layer_outputs"])
    assert [name for name, _ in recorded] == ["lstm", "attention"]  # the layers before the output layer
    faithful = run_cli("verify", out, "--keras", seed_keras)
    assert faithful.returncode == 0, faithful.stderr
    assert "  lstm " in faithful.stdout and "  attention " in faithful.stdout

    recurrent = next(t for t in model.graph.initializer if t.name.endswith("_R"))
    array = numpy_helper.to_array(recurrent).copy()
    array.flat[int(np.argmax(np.abs(array)))] += 0.5
    recurrent.CopyFrom(numpy_helper.from_array(array, recurrent.name))
    onnx.save(model, tmp_path / "moved.onnx")
    report = tmp_path / "report.json"
    result = run_cli("verify", tmp_path / "moved.onnx", "--keras", seed_keras, "--json", report)
    assert result.returncode == 1
    assert result.stderr.startswith("error: verify failed: layer 'lstm' is the first to diverge")
    data = json.loads(report.read_text())
    layers = {entry["name"]: entry for entry in data["layers"]}
    assert not layers["lstm"]["passed"] and layers["lstm"]["max_abs"] > 1e-3
    outputs_only = run_cli(
        "verify", tmp_path / "moved.onnx", "--keras", seed_keras, "--outputs-only", "--json", report
    )
    assert "layers" in json.loads(report.read_text()) and json.loads(report.read_text())["layers"] == []
    # the output alone: Keras and onnxruntime, compared here, agree to < 1e-4 on in-range inputs, and not on
    # wide ones (N(0, 3), which the seeded inputs include): --outputs-only must fail on the output then
    import keras
    import onnxruntime as ort

    rng = np.random.default_rng(3)
    keras_model = keras.saving.load_model(seed_keras)
    session = ort.InferenceSession(str(tmp_path / "moved.onnx"), providers=["CPUExecutionProvider"])
    errors = []
    for x in (rng.uniform(-1, 1, (64, 10, 1)), 3.0 * rng.standard_normal((64, 10, 1))):
        x = x.astype("float32")
        errors.append(np.abs(session.run(None, {"x": x})[0] - np.asarray(keras_model(x))).max())
    assert errors[0] < 1e-4 < 5e-4 < errors[1], errors
    assert outputs_only.returncode == 1, outputs_only.stdout + outputs_only.stderr
    assert outputs_only.stderr.startswith("error: verify failed: output 'y'")
