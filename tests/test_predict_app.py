"""What an application developer gets: file formats of `predict`, big inputs, the example app, cold start."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv

import numpy as np
import pytest
from conftest import ROOT, run_cli

from edgeattn.runtime import Predictor


def test_predict_csv_in_json_out_with_attention(seed_onnx, tmp_path):
    x = np.random.default_rng(0).random((4, 10, 1), dtype=np.float32)
    np.savetxt(tmp_path / "x.csv", x[:, :, 0], delimiter=",")
    result = run_cli("predict", seed_onnx, tmp_path / "x.csv", "-o", tmp_path / "y.json", "--attention")
    assert result.returncode == 0, result.stderr
    data = json.loads((tmp_path / "y.json").read_text())
    y, w = Predictor(seed_onnx).predict(x, return_attention=True)
    np.testing.assert_allclose(data["y"], y, atol=1e-6)
    np.testing.assert_allclose(data["attention_weights"], w, atol=1e-6)


def test_predict_json_on_stdin_to_csv(seed_onnx, tmp_path):
    x = np.random.default_rng(1).random((2, 10, 1))
    result = run_cli(
        "predict", seed_onnx, "-", "-o", tmp_path / "y.csv", "--attention", input=json.dumps(x.tolist())
    )
    assert result.returncode == 0, result.stderr
    assert np.loadtxt(tmp_path / "y.csv", delimiter=",").shape == (2,)
    assert np.loadtxt(tmp_path / "y.attention_weights.csv", delimiter=",").shape == (2, 10)


@pytest.mark.parametrize(
    ("content", "message"),
    [("[[1, 2]]", "rank 3"), ("not json", "not valid JSON"), ('[["a"]]', "must be numbers")],
)
def test_predict_refuses_bad_stdin_and_writes_nothing(seed_onnx, tmp_path, content, message):
    result = run_cli("predict", seed_onnx, "-", "-o", tmp_path / "y.json", input=content)
    assert result.returncode == 2
    assert message in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_csv_with_wrong_row_length(seed_onnx, tmp_path):
    np.savetxt(tmp_path / "x.csv", np.zeros((3, 7)), delimiter=",")
    result = run_cli("predict", seed_onnx, tmp_path / "x.csv", "-o", tmp_path / "y.npy")
    assert result.returncode == 2
    assert "rows have 7 values; the model takes 10 per sample" in result.stderr


def test_fifty_thousand_samples_run_in_chunks_and_match(seed_onnx):
    x = np.random.default_rng(2).random((50_000, 10, 1), dtype=np.float32)
    chunked = Predictor(seed_onnx, batch_size=4096).predict(x)
    whole = Predictor(seed_onnx).predict(x)
    assert chunked.shape == (50_000, 1)
    np.testing.assert_allclose(chunked, whole, atol=1e-6)


APP_PINS = ("numpy==1.26.4", "onnxruntime==1.17.3")  # what many deployed apps pin


def test_example_app_installs_beside_an_apps_older_pins_without_upgrading_them(tmp_path):
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"

    def pip(*args):
        done = subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *args],
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr[-2000:]

    def versions():
        code = "import numpy, onnxruntime; print(numpy.__version__, onnxruntime.__version__)"
        return subprocess.run([str(python), "-c", code], capture_output=True, text=True).stdout.split()

    pip(*APP_PINS)  # the app's own stack, first
    pip(str(ROOT))  # then edgeattn, no extras
    assert versions() == [p.split("==")[1] for p in APP_PINS]
    check = (
        "import importlib.util as u; print([m for m in ('tensorflow', 'keras', 'tf2onnx') if u.find_spec(m)])"
    )
    assert subprocess.run([str(python), "-c", check], capture_output=True, text=True).stdout.strip() == "[]"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [str(python), str(ROOT / "examples" / "predict_app.py"), str(ROOT / "models" / "seed.onnx")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("attention peaks at step") == 3
    assert "self-check: pass" in result.stdout


@pytest.mark.slow
def test_cold_start_is_at_least_5x_faster_than_tensorflow():
    sys.path.insert(0, str(ROOT / "scripts"))
    from cold_start import measure

    summary = measure(runs=3)
    assert summary["speedup"] >= 5, summary


def test_the_gpu_extra_resolves(tmp_path):
    """`pip install 'edgeattn[gpu]'` resolves in a fresh venv (a dry run: nothing is downloaded in full)."""
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    report = tmp_path / "report.json"
    done = subprocess.run(
        [str(env_dir / "bin" / "python"), "-m", "pip", "install", "--dry-run", "--quiet",
         "--disable-pip-version-check", "--report", str(report), f"{ROOT}[gpu]"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    names = {item["metadata"]["name"] for item in json.loads(report.read_text())["install"]}
    assert {"edgeattn", "onnxruntime-gpu", "onnxruntime", "numpy"} <= names
