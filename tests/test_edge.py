"""Edge speed and size: quantized files, the ORT format, the bench and the predictor's hot path."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import MODELS, run_cli

from edgeattn import graph
from edgeattn.errors import CheckFailedError
from edgeattn.quantize import quantize
from edgeattn.runtime import Predictor

SEED_ONNX = MODELS / "seed.onnx"


@pytest.mark.parametrize(("mode", "max_ratio", "max_error"), [("int8", 0.35, 0.02), ("fp16", 0.6, 0.01)])
def test_quantized_shipped_model_meets_size_and_error(mode, max_ratio, max_error, tmp_path):
    out = tmp_path / f"seed.{mode}.onnx"
    result = quantize(SEED_ONNX, out, mode)
    assert out.stat().st_size == result.size_bytes
    assert result.size_bytes <= max_ratio * SEED_ONNX.stat().st_size
    assert result.worst.relative <= max_error
    model = onnx.load(out)
    assert graph.check_structure(model, expect_recurrent=1) == []
    ops = {n.op_type for n in model.graph.node}
    assert ("DequantizeLinear" if mode == "int8" else "Cast") in ops
    assert {n.domain for n in model.graph.node} <= {"", "ai.onnx"}
    # Independent of the tool's own figure: on the shipped example inputs the outputs stay close.
    x = np.load(MODELS.parent / "docs" / "find-max-8.npy")
    want = Predictor(SEED_ONNX).predict(x)
    got = Predictor(out).predict(x)
    assert np.abs(got - want).max() <= max_error
    # The stored reference was re-based on the quantized model: the on-device check passes.
    assert Predictor(out).self_check()["passed"]


def test_quantize_refuses_beyond_max_error_and_writes_nothing(tmp_path):
    out = tmp_path / "tight.onnx"
    with pytest.raises(CheckFailedError, match="exceeds --max-error"):
        quantize(SEED_ONNX, out, "int8", max_error=1e-6)
    assert not out.exists()


def test_quantize_cli(tmp_path):
    out = tmp_path / "seed.fp16.onnx"
    done = run_cli("quantize", SEED_ONNX, "--mode", "fp16", "-o", out)
    assert done.returncode == 0, done.stderr
    import re

    written = int(re.search(r"-> ([\d,]+) bytes", done.stdout).group(1).replace(",", ""))
    assert written == out.stat().st_size < SEED_ONNX.stat().st_size * 0.6  # float16 weights: about half
    assert "Cast" in {n.op_type for n in onnx.load(out).graph.node}
    assert done.stdout.rstrip().endswith("pass (max error 1.00% of the scale)")
    again = run_cli("quantize", SEED_ONNX, "--mode", "fp16", "-o", out)
    assert again.returncode == 2 and "exists" in again.stderr


def test_export_to_ort_format_loads_and_matches(seed_keras, tmp_path):
    out = tmp_path / "seed.ort"
    done = run_cli("export", seed_keras, "-o", out, "--attention-weights")
    assert done.returncode == 0, done.stderr
    config = (tmp_path / "seed.required_operators.config").read_text()
    assert "ai.onnx;14;LSTM" in config
    reference = tmp_path / "seed.onnx"
    assert run_cli("export", seed_keras, "-o", reference, "--attention-weights").returncode == 0
    x = np.random.default_rng(0).random((16, 10, 1), dtype=np.float32)
    a = ort.InferenceSession(out, providers=["CPUExecutionProvider"]).run(None, {"x": x})
    b = ort.InferenceSession(reference, providers=["CPUExecutionProvider"]).run(None, {"x": x})
    for got, want in zip(a, b):
        np.testing.assert_allclose(got, want, atol=1e-6)
    checked = run_cli("verify", out, "--golden")
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_predictor_hot_path_returns_fresh_arrays_and_handles_shape_changes():
    predictor = Predictor(SEED_ONNX, providers=["cpu"])
    rng = np.random.default_rng(1)
    x1, x2 = rng.random((1, 10, 1), dtype=np.float32), rng.random((3, 10, 1), dtype=np.float32)
    first = predictor.predict(x1)
    second = predictor.predict(x1 * 0.5)
    assert not np.array_equal(first, second)  # the first answer was not overwritten by the second call
    np.testing.assert_array_equal(predictor.predict(x1), first)
    session = ort.InferenceSession(SEED_ONNX, providers=["CPUExecutionProvider"])
    for x in (x2, x1, x2[:2]):
        np.testing.assert_array_equal(predictor.predict(x), session.run(["y"], {"x": x})[0])
    with pytest.raises(ValueError, match="NaN"):
        predictor.predict(np.full((1, 10, 1), np.inf, np.float32))


def test_bench_cli_reports_the_floor_and_the_predictor(tmp_path):
    out = tmp_path / "bench.json"
    done = run_cli("bench", SEED_ONNX, "--batch", "1,8", "--seconds", "0.2", "--json", out)
    assert done.returncode == 0, done.stderr
    assert "floor (bare recurrent node)" in done.stdout and "edgeattn Predictor" in done.stdout
    report = json.loads(out.read_text())
    rows = {(r["name"], r["batch"]): r for r in report["rows"]}
    floor, predictor = rows[("floor (bare recurrent node)", 8)], rows[("edgeattn Predictor", 8)]
    assert (
        abs(predictor["x_floor"] - predictor["p50_us"] / floor["p50_us"]) < 0.01
    )  # the ratio is of these rows
    assert (
        abs(predictor["samples_per_s"] - 8 / (predictor["p50_us"] * 1e-6)) < 0.01 * predictor["samples_per_s"]
    )
    from edgeattn import bench
    from edgeattn.onnxfile import load_onnx

    floor_model, _ = bench.floor_model(load_onnx(SEED_ONNX), 10)
    assert [n.op_type for n in floor_model.graph.node] == ["LSTM"]  # the floor is the bare recurrent node


def test_bench_needs_keras_for_litert():
    done = run_cli("bench", SEED_ONNX, "--litert")
    assert done.returncode == 2 and "--keras" in done.stderr


@pytest.mark.slow
def test_bench_against_keras_and_litert(tmp_path):
    done = run_cli(
        "bench", SEED_ONNX, "--keras", MODELS / "seed.keras", "--litert", "--batch", "1", "--seconds", "0.5"
    )
    assert done.returncode == 0, done.stderr
    assert "Keras under tf.function" in done.stdout and "LiteRT (XNNPACK)" in done.stdout


def test_bench_on_a_quantized_file_measures_against_the_float_floor(tmp_path):
    from edgeattn import bench

    out = tmp_path / "seed.int8.onnx"
    quantize(SEED_ONNX, out, "int8")
    report = bench.run(out, batches=(1,), seconds=0.2)
    floor_model, _ = bench.floor_model(onnx.load(out), 10)
    ops = [n.op_type for n in floor_model.graph.node]
    assert ops == ["LSTM"]  # the floor of an int8 file: its dequantized weights, no DequantizeLinear left
    floor, predictor = report.row(bench.FLOOR, 1), report.row(bench.PREDICTOR, 1)
    assert abs(predictor.x_floor - predictor.p50_us / floor.p50_us) < 0.01
