"""The base install, without TensorFlow: the Predictor, `predict`, `inspect` and `verify --golden` on the shipped
model. scripts/test.sh also runs this module in a second venv at the oldest supported pins
(tests/oldest-pins.txt), so nothing here may import TensorFlow, Keras or tf2onnx, or need a fixture that does.

The reference is what Keras computed at export time (the golden set stored in the model), not onnxruntime.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest
from conftest import MODELS, ROOT, run_cli

from edgeattn.runtime import Predictor, decode_array

SEED = MODELS / "seed.onnx"


def golden():
    meta = ort.InferenceSession(str(SEED), providers=["CPUExecutionProvider"]).get_modelmeta()
    data = json.loads(meta.custom_metadata_map["edgeattn.golden"])
    return decode_array(data["inputs"]["x"]), {k: decode_array(v) for k, v in data["outputs"].items()}


@pytest.mark.parametrize("io_binding", [True, False])
def test_predictor_matches_what_keras_computed_on_both_run_paths(io_binding):
    x, keras_outputs = golden()
    predictor = Predictor(SEED, io_binding=io_binding)
    assert predictor.io_binding is io_binding
    for _ in range(3):  # the first call binds, the next ones take the bound buffers
        y, weights = predictor.predict(x, return_attention=True)
        np.testing.assert_allclose(y, keras_outputs["y"], atol=1e-5)
        np.testing.assert_allclose(weights, keras_outputs["attention_weights"], atol=1e-5)
        np.testing.assert_allclose(predictor.predict(x), keras_outputs["y"], atol=1e-5)
    assert predictor.self_check()["passed"]


def test_the_bound_path_is_detected_on_this_onnxruntime():
    # Every onnxruntime this project supports (tests/oldest-pins.txt and the newest) binds numpy buffers.
    assert Predictor(SEED).io_binding


def test_the_attention_is_a_distribution_over_time():
    x = np.random.default_rng(0).random((5, 10, 1), dtype=np.float32)
    _, weights = Predictor(SEED).predict(x, return_attention=True)
    assert weights.shape == (5, 10)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-5)
    assert (weights.argmax(axis=1) == x[:, :, 0].argmax(axis=1)).mean() >= 0.8  # it looks at the maximum


def test_predict_cli_json_in_csv_out(tmp_path):
    x, keras_outputs = golden()
    result = run_cli(
        "predict", SEED, "-", "-o", tmp_path / "y.csv", "--attention", input=json.dumps(x.tolist())
    )
    assert result.returncode == 0, result.stderr
    y = np.loadtxt(tmp_path / "y.csv", delimiter=",").reshape(-1, 1)
    np.testing.assert_allclose(y, keras_outputs["y"], atol=1e-5)
    bad = run_cli("predict", SEED, "-", "-o", tmp_path / "z.csv", input="[[1, 2]]")
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and not (tmp_path / "z.csv").exists()


def test_inspect_and_verify_golden_cli():
    shown = run_cli("inspect", SEED, "--json")
    assert shown.returncode == 0, shown.stderr
    info = json.loads(shown.stdout)
    assert info["opset"] == 17 and info["op_histogram"]["LSTM"] == 1
    verified = run_cli("verify", SEED, "--golden")
    assert verified.returncode == 0, verified.stderr
    assert "pass" in verified.stdout


def test_verify_golden_fails_on_a_moved_weight(tmp_path):
    import onnx
    from onnx import numpy_helper

    model = onnx.load(SEED)
    largest = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    array = numpy_helper.to_array(largest).copy()
    array.flat[7] += 0.5
    largest.CopyFrom(numpy_helper.from_array(array, largest.name))
    onnx.save(model, tmp_path / "moved.onnx")
    result = run_cli("verify", tmp_path / "moved.onnx", "--golden")
    assert result.returncode == 1
    assert result.stderr.startswith("error: ")


def test_example_app():
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "predict_app.py"), str(SEED)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("attention peaks at step") == 3
    assert "self-check: pass" in result.stdout


def test_a_missing_gpu_provider_falls_back_to_cpu_with_one_warning(caplog):
    import logging

    with caplog.at_level(logging.WARNING, logger="edgeattn.runtime"):
        predictor = Predictor(SEED, providers=["cuda", "tensorrt", "cpu"])
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA provider")
    assert predictor.providers == ("CPUExecutionProvider",)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "'cuda', 'tensorrt' not available" in warnings[0].getMessage()


def test_the_shipped_model_records_no_absolute_path():
    import onnx

    meta = {p.key: p.value for p in onnx.load(SEED).metadata_props}
    assert meta["edgeattn.source_path"] == "seed.keras"  # relative to the model: models/seed.keras
    assert not any(v.startswith("/") or ":\\\\" in v for v in meta.values())


def test_a_quantized_file_is_checked_against_keras_within_the_int8_promise(tmp_path):
    """The error is measured here against what Keras computed (the float file's golden set), with int8's
    promise (2% of the output's scale) as this test's own bound, not the tolerance quantize accepted."""
    out = tmp_path / "int8.onnx"
    made = run_cli("quantize", SEED, "--mode", "int8", "-o", out)
    assert made.returncode == 0, made.stderr
    x, keras_outputs = golden()
    err = float(np.abs(Predictor(out).predict(x) - keras_outputs["y"]).max())
    assert 1e-4 < err <= 0.02 * float(np.abs(keras_outputs["y"]).max()), (
        err
    )  # a real error, within the promise
    # verify --golden re-runs the same stored inputs: it must report this very error
    verified = run_cli("verify", out, "--golden")
    assert verified.returncode == 0, verified.stderr
    assert f"y                    max abs {err:.3g} " in verified.stdout, verified.stdout


def _two_input_model(path) -> None:
    """y = a @ b: tokens-and-positions models take two inputs; built with onnx's helper alone."""
    import onnx
    from onnx import TensorProto, helper

    g = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["y"])],
        "two",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, ["batch", 3, 4]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, ["batch", 4, 2]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3, 2])],
    )
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8), path)


@pytest.mark.parametrize("io_binding", [True, False])
def test_a_model_of_two_inputs_takes_a_dict_on_both_run_paths(io_binding, tmp_path):
    _two_input_model(tmp_path / "two.onnx")
    predictor = Predictor(tmp_path / "two.onnx", providers=["cpu"], io_binding=io_binding)
    rng = np.random.default_rng(0)
    for batch in (2, 2, 5, 2):  # the second call of a shape takes the pre-bound lane
        a, b = rng.random((batch, 3, 4), dtype=np.float32), rng.random((batch, 4, 2), dtype=np.float32)
        first = predictor.predict({"a": a, "b": b})
        np.testing.assert_allclose(first, a @ b, rtol=1e-6)
        second = predictor.predict({"a": a * 2, "b": b})
        np.testing.assert_allclose(first, a @ b, rtol=1e-6)  # not overwritten by the next call
        np.testing.assert_allclose(second, 2 * a @ b, rtol=1e-6)
    a[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        predictor.predict({"a": a, "b": b})
    with pytest.raises(ValueError, match="missing input"):
        predictor.predict({"a": a})


def test_the_fast_lane_refuses_any_nan_or_inf_and_copies_exactly():
    """From the second call of a shape on, predict() copies and checks the input as bytes (no numpy between two
    runs); that check must still find a NaN or an infinity in any position, and pass every finite value."""
    model = str(SEED)
    predictor = Predictor(model, providers=["cpu"])
    plain = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(3).random((3, 10, 1), dtype=np.float32)
    predictor.predict(x)  # binds this shape
    for position in range(x.size):
        for bad in (np.nan, np.inf, -np.inf):
            y = x.copy()
            y.flat[position] = bad
            with pytest.raises(ValueError, match="NaN or infinite"):
                predictor.predict(y)
    big = x * np.float32(3e38)  # finite; its squares overflow (the large-array check's fast test then fails)
    tiny = x * np.float32(1e-44)  # subnormal
    for given in (x, big, tiny, x[::-1], np.asfortranarray(x), -x):
        want = plain.run(None, {"x": np.ascontiguousarray(given)})[0]
        np.testing.assert_array_equal(predictor.predict(given), want)
    allowing = Predictor(model, allow_nonfinite=True)
    for _ in range(2):  # the second call takes the lane
        assert np.isfinite(allowing.predict(np.full((3, 10, 1), np.inf, np.float32))).all()


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_the_byte_check_agrees_with_numpy_on_every_kind_of_float(dtype):
    """The lane's check on a float's bits, against numpy's isfinite: every float16, and the edge values of the
    wider types (largest, smallest normal and subnormal, signed zeros, infinities, NaN), in every position."""
    from edgeattn.runtime import _filler

    info = np.finfo(dtype)
    edges = [0.0, -0.0, info.tiny, info.smallest_subnormal, info.max, -info.max, np.inf, -np.inf, np.nan]
    values = (
        np.arange(1 << 16, dtype=np.uint16).view(np.float16)
        if dtype is np.float16
        else np.array(edges, dtype)
    )
    buffer = np.zeros(3, dtype)
    fill = _filler(buffer, check=True)
    for position in range(3):
        x = np.ones(3, dtype)
        for value in values:
            x[position] = value
            assert fill(x) == bool(np.isfinite(value)), (position, value)
            if np.isfinite(value):
                assert buffer.tobytes() == x.tobytes()
    assert not fill(np.ones(3, np.float32 if dtype is not np.float32 else np.float64))  # another dtype


def test_the_attention_weights_come_through_the_lane_as_copies():
    predictor = Predictor(str(SEED), providers=["cpu"])
    plain = ort.InferenceSession(str(SEED), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(4).random((2, 10, 1), dtype=np.float32)
    predictor.predict(x)  # binds this shape
    y, weights = predictor.predict(x, return_attention=True)
    predictor.predict(x[::-1].copy(), return_attention=True)  # must not overwrite what was returned
    want_y, want_weights = plain.run(["y", "attention_weights"], {"x": x})
    np.testing.assert_array_equal(y, want_y)
    np.testing.assert_array_equal(weights, want_weights)


def test_a_model_with_external_data_runs_from_a_private_copy_of_its_checked_files(tmp_path, monkeypatch):
    # The Predictor builds from the bytes it read; external data from a private copy of the checked files
    # (onnxruntime is given a path there, never the user's folder again): also at the oldest onnxruntime.
    import tempfile

    import onnx

    folder = tmp_path / "m"
    folder.mkdir()
    monkeypatch.chdir(folder)  # onnx resolves location against the working folder in some versions
    onnx.save(onnx.load(SEED), "seed.onnx", save_as_external_data=True, location="w.bin", size_threshold=256)
    monkeypatch.chdir(tmp_path)
    private = tmp_path / "tmp"
    private.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private))
    x, keras_outputs = golden()
    y = Predictor(folder / "seed.onnx").predict(x)
    np.testing.assert_allclose(y, keras_outputs["y"], atol=1e-5)
    assert list(private.iterdir()) == []  # removed once the session is built
    (folder / "w.bin").unlink()
    with pytest.raises(ValueError, match="is missing"):
        Predictor(folder / "seed.onnx")
