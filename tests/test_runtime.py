"""The predictor: numpy + onnxruntime only, strict about input, equal to onnxruntime."""

from __future__ import annotations

import subprocess
import sys
import threading

import numpy as np
import onnxruntime as ort
import pytest

from edgeattn.runtime import Predictor


def test_importing_the_runtime_pulls_in_no_tensorflow():
    code = (
        "import sys, edgeattn, edgeattn.runtime\n"
        "heavy = [m for m in ('tensorflow', 'keras', 'tf_keras', 'tf2onnx') if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""


def test_predicts_with_tensorflow_unimportable(seed_onnx):
    code = (
        "import sys\n"
        "for m in ('tensorflow', 'keras', 'tf_keras', 'tf2onnx'): sys.modules[m] = None\n"
        "import numpy as np\n"
        "from edgeattn.runtime import Predictor\n"
        "p = Predictor(sys.argv[1])\n"
        "y, w = p.predict(np.zeros((2, 10, 1), np.float32), return_attention=True)\n"
        "print(y.shape, w.shape, p.self_check()['passed'])"
    )
    result = subprocess.run([sys.executable, "-c", code, str(seed_onnx)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "(2, 1) (2, 10) True"


def test_predict_equals_onnxruntime(seed_onnx):
    x = np.random.default_rng(0).random((9, 10, 1), dtype=np.float32)
    want = ort.InferenceSession(str(seed_onnx), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    p = Predictor(seed_onnx, providers=["cpu"])
    np.testing.assert_array_equal(p.predict(x), want[0])
    _, w = p(x, return_attention=True)
    np.testing.assert_array_equal(w, want[1])
    assert np.all(w >= 0) and np.allclose(w.sum(axis=1), 1.0, atol=1e-5)


def test_accepts_lists_and_other_float_dtypes(seed_onnx):
    p = Predictor(seed_onnx)
    x = np.random.default_rng(1).random((2, 10, 1))
    np.testing.assert_allclose(p.predict(x.tolist()), p.predict(x.astype(np.float32)), atol=0)


@pytest.mark.parametrize(
    ("bad", "error", "message"),
    [
        (
            np.zeros((2, 10), np.float32),
            ValueError,
            r"must have shape \(batch, 10, 1\) \(rank 3\), got shape \(2, 10\)",
        ),
        (np.zeros((2, 10, 3), np.float32), ValueError, r"axis 2 is 3, expected 1"),
        (np.array([["a"] * 10]), TypeError, "must be numbers"),
        ("hello", TypeError, "got a string"),
        (np.full((1, 10, 1), np.nan, np.float32), ValueError, "NaN or infinite"),
    ],
)
def test_bad_inputs_get_clear_errors(seed_onnx, bad, error, message):
    with pytest.raises(error, match=message):
        Predictor(seed_onnx).predict(bad)


def test_nonfinite_allowed_on_request(seed_onnx):
    y = Predictor(seed_onnx, allow_nonfinite=True).predict(np.full((1, 10, 1), np.inf, np.float32))
    assert y.shape == (1, 1)


def test_chunks_equal_one_batch(seed_onnx):
    x = np.random.default_rng(2).random((1000, 10, 1), dtype=np.float32)
    whole = Predictor(seed_onnx).predict(x)
    chunked = Predictor(seed_onnx, batch_size=64).predict(x)
    np.testing.assert_allclose(chunked, whole, atol=1e-6)


def test_threads_get_their_own_answers(seed_onnx):
    p = Predictor(seed_onnx, threads=1)
    inputs = [np.random.default_rng(i).random((3, 10, 1), dtype=np.float32) for i in range(8)]
    expected = [p.predict(x) for x in inputs]
    errors = []

    def work(i):
        for _ in range(50):
            if not np.array_equal(p.predict(inputs[i]), expected[i]):
                errors.append(i)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_introspection(seed_onnx):
    p = Predictor(seed_onnx)
    assert [(s.name, s.shape) for s in p.inputs] == [("x", ("batch", 10, 1))]
    assert [s.name for s in p.outputs] == ["y", "attention_weights"]
    assert p.metadata["edgeattn.source"] == "seed.keras"
    assert "CPUExecutionProvider" in p.providers
    assert "x: (batch, 10, 1) float32" in repr(p)


def test_missing_attention_output_is_explained(seed_onnx_plain):
    with pytest.raises(ValueError, match="export it with `edgeattn export --attention-weights`"):
        Predictor(seed_onnx_plain).predict(np.zeros((1, 10, 1), np.float32), return_attention=True)


def test_unavailable_provider_is_skipped(seed_onnx, caplog):
    import logging

    with caplog.at_level(logging.WARNING, logger="edgeattn.runtime"):
        p = Predictor(seed_onnx, providers=["tensorrt", "cpu"])
    assert p.providers == ("CPUExecutionProvider",)
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "'tensorrt' not available" in warning and "CPUExecutionProvider" in warning


def test_not_a_model(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_text("not a model")
    with pytest.raises(ValueError, match="not a model onnxruntime can load"):
        Predictor(bad)
    with pytest.raises(FileNotFoundError):
        Predictor(tmp_path / "missing.onnx")
