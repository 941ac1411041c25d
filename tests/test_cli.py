"""The command line through its installed entry point: exit codes, messages, files written or not."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from conftest import run_cli


@pytest.mark.parametrize("command", ["train", "export", "verify", "predict", "inspect", "explain"])
def test_help_shows_an_example(command):
    result = run_cli(command, "--help")
    assert result.returncode == 0
    assert "Example" in result.stdout
    assert f"edgeattn {command}" in result.stdout


def test_train_export_verify_predict(tmp_path):
    model = tmp_path / "m.keras"
    result = run_cli("train", "--task", "find-max", "--epochs", "2", "--samples", "400", "-o", model)
    assert result.returncode == 0, result.stderr
    assert "epoch 2/2" in result.stderr  # progress while it trains
    assert "validation MAE" in result.stdout
    assert model.is_file()

    onnx_file = tmp_path / "m.onnx"
    result = run_cli("export", model, "-o", onnx_file)
    assert result.returncode == 0, result.stderr
    assert "LSTM 1" in result.stdout and "parity  max abs error" in result.stdout

    result = run_cli("verify", onnx_file, "--keras", model)
    assert result.returncode == 0, result.stderr

    x = np.random.default_rng(0).random((6, 10, 1), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    result = run_cli("predict", onnx_file, tmp_path / "x.npy", "-o", tmp_path / "y.npy")
    assert result.returncode == 0, result.stderr
    want = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), want)


def test_missing_input_is_exit_2_without_traceback(tmp_path):
    result = run_cli("export", tmp_path / "nope.keras", "-o", tmp_path / "out.onnx")
    assert result.returncode == 2
    assert result.stderr.startswith("error: ")
    assert "nope.keras: no such file" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out.onnx").exists()


def test_not_a_model_is_exit_2(tmp_path):
    fake = tmp_path / "fake.h5"
    fake.write_text("a,b\n1,2\n")
    result = run_cli("export", fake, "-o", tmp_path / "out.onnx")
    assert result.returncode == 2
    assert "neither a .keras (zip) nor an .h5 (HDF5) model file" in result.stderr
    assert len(result.stderr.strip().splitlines()) <= 2


def test_debug_shows_the_traceback(tmp_path):
    result = run_cli("--debug", "export", tmp_path / "nope.keras", "-o", tmp_path / "out.onnx")
    assert result.returncode != 0
    assert "Traceback" in result.stderr


def test_predict_refuses_wrong_shape_and_writes_nothing(seed_onnx, tmp_path):
    np.save(tmp_path / "bad.npy", np.zeros((3, 9, 1), np.float32))
    result = run_cli("predict", seed_onnx, tmp_path / "bad.npy", "-o", tmp_path / "y.npy")
    assert result.returncode == 2
    assert "axis 1 is 9, expected 10" in result.stderr
    assert not (tmp_path / "y.npy").exists()


def test_predict_keeps_existing_output_without_force(seed_onnx, tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((1, 10, 1), np.float32))
    (tmp_path / "y.npy").write_bytes(b"keep")
    result = run_cli("predict", seed_onnx, tmp_path / "x.npy", "-o", tmp_path / "y.npy")
    assert result.returncode == 2
    assert "exists" in result.stderr and "--force" in result.stderr
    assert (tmp_path / "y.npy").read_bytes() == b"keep"
    assert (
        run_cli("predict", seed_onnx, tmp_path / "x.npy", "-o", tmp_path / "y.npy", "--force").returncode == 0
    )
    assert np.load(tmp_path / "y.npy").shape == (1, 1)


def test_inspect_json(seed_onnx):
    import json

    result = run_cli("inspect", seed_onnx, "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["op_histogram"]["LSTM"] == 1
    assert info["outputs"][1]["name"] == "attention_weights"
    assert info["metadata"]["edgeattn.source"] == "seed.keras"


def test_usage_error_is_exit_2():
    result = run_cli("export")
    assert result.returncode == 2
    assert "Missing argument" in result.stderr
