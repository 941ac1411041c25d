"""verify: passes a faithful export, fails broken ones with exit 1 and a message that names the problem."""

from __future__ import annotations

import json

import numpy as np
import onnx
from conftest import run_cli
from onnx import numpy_helper


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
    assert result.stderr.startswith("error: verify failed: output 'y'")


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


def test_verify_finds_the_source_from_metadata(seed_onnx):
    result = run_cli("verify", seed_onnx)  # seed.keras is recorded in the metadata
    assert result.returncode == 0, result.stderr
    assert "sha256 matches" in result.stdout


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
    assert result.returncode in (1, 2)
    assert result.returncode == 1, result.stderr
    assert "onnx.checker" in result.stdout + result.stderr


def test_verify_says_when_the_source_changed(seed_onnx, seed_keras, tmp_path):
    import shutil

    from edgeattn.tasks import build_seed_model

    shutil.copy(seed_onnx, tmp_path / "seed.onnx")
    build_seed_model(seed=11).save(tmp_path / "seed.keras")  # same name, other weights
    result = run_cli("verify", tmp_path / "seed.onnx")
    assert "is not the file that was exported (sha256 differs)" in result.stdout
    assert result.returncode == 1  # and the numbers disagree


def test_verify_samples_and_free_lengths_options(seed_onnx, seed_keras):
    result = run_cli("verify", seed_onnx, "--keras", seed_keras, "--samples", "100")
    assert result.returncode == 0, result.stderr
    assert "batch 1, 7, 100" in result.stdout
