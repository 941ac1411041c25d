"""The seed's idea end to end: kernel regression, attention weights as an output, explain."""

from __future__ import annotations

import numpy as np
import onnx
from conftest import ROOT, run_cli

from edgeattn.runtime import Predictor


def test_kernel_regression_trains_exports_and_verifies(tmp_path):
    model = tmp_path / "kernel.keras"
    result = run_cli("train", "--task", "kernel-regression", "--epochs", "3", "-o", model)
    assert result.returncode == 0, result.stderr
    assert "learned bandwidth w = " in result.stdout
    out = tmp_path / "kernel.onnx"
    result = run_cli("export", model, "-o", out, "--attention-weights")
    assert result.returncode == 0, result.stderr
    assert {n.domain for n in onnx.load(out).graph.node} <= {""}
    result = run_cli("verify", out, "--keras", model)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "attention_weights" in result.stdout

    from edgeattn.convert.tasks import kernel_regression_data

    x_train, y_train, x_test, _ = kernel_regression_data()
    feed = {"queries": x_test[None, :], "keys": x_train[None, :], "values": y_train[None, :]}
    y, w = Predictor(out).predict(feed, return_attention=True)
    assert y.shape == (1, len(x_test))
    assert w.shape == (1, len(x_test), len(x_train))
    # a Nadaraya-Watson estimate in NumPy with the bandwidth Keras learned: both outputs must be that
    import keras

    import edgeattn.convert.layers  # noqa: F401  (registers NadarayaWatson for Keras)

    (bandwidth,) = keras.saving.load_model(model).get_layer("nadaraya_watson").get_weights()[0]
    assert abs(bandwidth - 1.0) > 1e-3  # trained: the check below would not tell w = 1 from the learned w
    scores = -0.5 * ((x_test[:, None].astype(np.float64) - x_train[None, :]) * bandwidth) ** 2
    kernel = np.exp(scores - scores.max(axis=1, keepdims=True))
    kernel /= kernel.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(w[0], kernel, atol=1e-5)
    np.testing.assert_allclose(y[0], kernel @ y_train, atol=1e-4)


def test_seed_weights_are_distributions_that_depend_on_the_input(seed_onnx):
    p = Predictor(seed_onnx)
    rng = np.random.default_rng(5)
    _, w1 = p.predict(rng.random((16, 10, 1), dtype=np.float32), return_attention=True)
    _, w2 = p.predict(rng.random((16, 10, 1), dtype=np.float32), return_attention=True)
    assert w1.shape == (16, 10)
    assert np.all(w1 >= 0) and np.allclose(w1.sum(axis=1), 1.0, atol=1e-5)
    assert np.abs(w1 - w2).max() > 1e-3


def test_shipped_model_looks_at_the_maximum():
    from edgeattn.convert.tasks import find_max_data

    x, _ = find_max_data(1000, seed=99)
    _, w = Predictor(ROOT / "models" / "seed.onnx").predict(x, return_attention=True)
    share = float(np.mean(w.argmax(axis=1) == x[:, :, 0].argmax(axis=1)))
    assert share > 0.9


def test_explain_prints_shades_and_writes_a_png(seed_onnx, tmp_path):
    x = np.random.default_rng(6).random((3, 10, 1), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    png = tmp_path / "att.png"
    result = run_cli("explain", seed_onnx, tmp_path / "x.npy", "--png", png, "--samples", "2")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("attention peaks at t=") == 2
    assert "█" in result.stdout
    data = png.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000


def test_explain_needs_the_attention_output(seed_onnx_plain, tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((1, 10, 1), np.float32))
    result = run_cli("explain", seed_onnx_plain, tmp_path / "x.npy")
    assert result.returncode == 2
    assert "no attention_weights output" in result.stderr
    assert "--attention-weights" in result.stderr
