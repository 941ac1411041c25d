"""Edge speed and size: quantized files, the ORT format, the bench and the predictor's hot path."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import MODELS, run_cli

from edgeattn.core.errors import CheckFailedError
from edgeattn.deploy.quantize import quantize
from edgeattn.graphs import graph
from edgeattn.runtime import Predictor

SEED_ONNX = MODELS / "seed.onnx"


@pytest.mark.parametrize(("mode", "max_ratio", "max_error"), [("int8", 0.35, 0.02), ("fp16", 0.6, 0.01)])
def test_quantized_shipped_model_meets_size_and_error(mode, max_ratio, max_error, tmp_path):
    out = tmp_path / f"seed.{mode}.onnx"
    result = quantize(SEED_ONNX, out, mode)
    assert out.stat().st_size == result.size_bytes
    assert result.size_bytes <= max_ratio * SEED_ONNX.stat().st_size
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
    # Against Keras itself (the outputs Keras computed at export, stored in the float file), with this test's
    # own bound (not the tolerance quantize accepted and stored): the quantized error, as a share of the
    # output's scale, is real (not 0) and within the mode's promise.
    x_gold, keras_y = _keras_golden()
    err = np.abs(Predictor(out).predict(x_gold) - keras_y).max()
    assert 0 < err <= max_error * np.abs(keras_y).max(), err


def _keras_golden():
    """The inputs and the output ``y`` that Keras computed when models/seed.onnx was exported."""
    from edgeattn.runtime import decode_array

    meta = {p.key: p.value for p in onnx.load(SEED_ONNX).metadata_props}
    data = json.loads(meta["edgeattn.golden"])
    return decode_array(data["inputs"]["x"]), decode_array(data["outputs"]["y"])


def _assert_ratios_are_round_by_round(rows) -> None:
    """Every ratio a bench row reports, recomputed here from the rows' own per-round p50s."""
    from edgeattn.deploy import bench

    by_name = {(r["name"], r["batch"]): r for r in rows}
    checked = 0
    for row in rows:
        for key, ratio in row["x"].items():
            base = by_name[(bench.REFERENCES[key], row["batch"])]["round_p50_us"]
            mine = np.divide(row["round_p50_us"], base)
            assert ratio["median"] == pytest.approx(float(np.median(mine)))
            assert (ratio["low"], ratio["high"]) == pytest.approx((mine.min(), mine.max()))
            checked += 1
    assert checked


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
    done = run_cli("bench", SEED_ONNX, "--batch", "1,8", "--seconds", "0.2", "--threads", "2", "--json", out)
    assert done.returncode == 0, done.stderr
    assert "floor (bare recurrent node)" in done.stdout and "edgeattn Predictor" in done.stdout
    rows = {(r["name"], r["batch"]): r for r in json.loads(out.read_text())["rows"]}
    assert set(rows) == {
        (name, b) for name in ("floor (bare recurrent node)", "edgeattn Predictor") for b in (1, 8)
    }
    assert all(r["threads"] == 2 for r in rows.values())  # read back from each session's options
    floor, predictor = rows[("floor (bare recurrent node)", 8)], rows[("edgeattn Predictor", 8)]
    # The ratio is the median of the per-round ratios, recomputed here from the per-round p50s.
    ratios = [p / f for p, f in zip(predictor["round_p50_us"], floor["round_p50_us"])]
    assert len(ratios) == 5
    assert predictor["x"]["floor"]["median"] == pytest.approx(float(np.median(ratios)))
    assert predictor["x"]["floor"]["low"] == pytest.approx(min(ratios))
    assert predictor["samples_per_s"] == pytest.approx(8 / (predictor["p50_us"] / 1e6))


def test_the_floor_is_the_bare_node_fed_what_reaches_it():
    from edgeattn.deploy import bench
    from edgeattn.graphs.onnxfile import load_onnx

    proto = load_onnx(SEED_ONNX)
    floor_model, sources = bench.floor_model(proto)
    assert [n.op_type for n in floor_model.graph.node] == ["LSTM"]
    x = np.random.default_rng(3).random((4, 10, 1), dtype=np.float32)
    (feed,) = bench.floor_feeds(proto, sources, [{"x": x}])
    # The seed model's LSTM reads the input, time-major: the floor gets exactly that.
    np.testing.assert_array_equal(feed["X0"], x.transpose(1, 0, 2))


def test_bench_needs_keras_for_litert():
    done = run_cli("bench", SEED_ONNX, "--litert")
    assert done.returncode == 2
    assert "--keras" in done.stderr


def test_bench_against_keras_and_litert_in_a_child_with_the_threads_set(tmp_path):
    """A fast run of the TensorFlow contenders: the thread count is in effect and the outputs agree."""
    out = tmp_path / "bench.json"
    done = run_cli(
        "bench", SEED_ONNX, "--keras", MODELS / "seed.keras", "--litert", "--batch", "2", "--seconds", "0.1",
        "--threads", "2", "--json", out,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    rows = {r["name"]: r for r in report["rows"]}
    assert set(rows) >= {"Keras under tf.function", "LiteRT (XNNPACK)"}, report["skipped"]
    assert rows["Keras under tf.function"]["threads"] == 2 and rows["LiteRT (XNNPACK)"]["threads"] == 2
    assert "intra-op threads 2" in report["notes"]["Keras"]
    for name in ("Keras under tf.function", "LiteRT (XNNPACK)"):
        assert rows[name]["max_abs_vs_predictor"] < 1e-5  # the same inputs reached every contender
        assert len(rows[name]["round_p50_us"]) == bench_rounds() and min(rows[name]["round_p50_us"]) > 0
    _assert_ratios_are_round_by_round(report["rows"])
    # Keras under tf.function is slower than the bare recurrent node by far (~30x in DESIGN.md)
    assert rows["Keras under tf.function"]["x"]["floor"]["median"] > 3
    assert "x tf.function" in done.stdout and "x LiteRT" in done.stdout


def test_bench_on_a_quantized_file_measures_against_the_float_floor(tmp_path):
    from edgeattn.deploy import bench

    out = tmp_path / "seed.int8.onnx"
    quantize(SEED_ONNX, out, "int8")
    report = bench.run(out, batches=(1,), seconds=0.2)
    floor_model, _ = bench.floor_model(onnx.load(out))
    ops = [n.op_type for n in floor_model.graph.node]
    assert ops == ["LSTM"]  # the floor of an int8 file: its dequantized weights, no DequantizeLinear left
    floor, predictor = report.row(bench.FLOOR, 1), report.row(bench.PREDICTOR, 1)
    _assert_ratios_are_round_by_round([dataclasses.asdict(r) for r in report.rows])
    # the whole model (the LSTM and the attention around it) is slower than its bare LSTM node, round by round
    assert predictor.x_floor == pytest.approx(
        float(np.median(np.divide(predictor.round_p50_us, floor.round_p50_us)))
    )


def bench_rounds() -> int:
    from edgeattn.deploy import bench

    return bench.ROUNDS


@pytest.mark.parametrize("mode", ["int8", "fp16"])
def test_quantized_weights_are_folded_at_load(mode, tmp_path):
    """onnxruntime's own optimized graph shows it: no DequantizeLinear/Cast of weights left, unless asked."""
    from edgeattn.runtime import session_options

    out = tmp_path / f"seed.{mode}.onnx"
    quantize(SEED_ONNX, out, mode)
    weight_op = "DequantizeLinear" if mode == "int8" else "Cast"

    def optimized_ops(fold: bool) -> set[str]:
        options = session_options(threads=1, fold_weights=fold)
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = str(tmp_path / f"optimized-{fold}.onnx")
        ort.InferenceSession(out, options, providers=["CPUExecutionProvider"])
        return {n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node}

    assert weight_op not in optimized_ops(True)
    if mode == "int8":  # onnxruntime keeps DequantizeLinear unless told; it always folds a Cast of constants
        assert weight_op in optimized_ops(False)
    x = np.random.default_rng(2).random((5, 10, 1), dtype=np.float32)
    folded, stored = Predictor(out), Predictor(out, fold_weights=False)
    assert folded.fold_weights and not stored.fold_weights
    # Folding computes what the file says: the same graph with its weights dequantized here, in NumPy.
    want = ort.InferenceSession(_dequantized(onnx.load(out)).SerializeToString()).run(["y"], {"x": x})[0]
    np.testing.assert_allclose(folded.predict(x), want, atol=1e-6)
    # The stored graph runs onnxruntime's own int8 kernels where it has them: close, not equal.
    assert np.abs(stored.predict(x) - want).max() < 0.02


def _dequantized(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with each DequantizeLinear/Cast of a constant replaced by its float value."""
    from onnx import numpy_helper

    values = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    keep = []
    for node in model.graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in values:
            q = values[node.input[0]].astype(np.float64)
            scale = values[node.input[1]].astype(np.float64)
            zero = values[node.input[2]].astype(np.float64) if len(node.input) > 2 else 0.0
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
            if scale.size > 1:
                shape = [1] * q.ndim
                shape[axis] = -1
                scale, zero = scale.reshape(shape), np.reshape(zero, shape) if np.ndim(zero) else zero
            value = ((q - zero) * scale).astype(np.float32)
        elif node.op_type == "Cast" and node.input[0] in values:
            value = values[node.input[0]].astype(np.float32)
        else:
            keep.append(node)
            continue
        model.graph.initializer.append(numpy_helper.from_array(value, node.output[0]))
    del model.graph.node[:]
    model.graph.node.extend(keep)
    return model


def test_the_benchmark_script_writes_its_table(tmp_path):
    """A fast run of scripts/benchmark.py (the README's table): every contender present, threads in effect."""
    import subprocess
    import sys

    from conftest import ROOT

    out = tmp_path / "benchmark.md"
    done = subprocess.run(
        [sys.executable, ROOT / "scripts" / "benchmark.py", "--seconds", "0.1", "--batches", "1,4",
         "--only", "seed", "--no-page", "--output", out],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    table = out.read_text()
    rows = {
        line.split(" | ")[0].lstrip("| "): line.split(" | ")
        for line in table.splitlines()
        if line.startswith("| ")
    }
    for name in (
        "floor (bare recurrent node)", "edgeattn Predictor", "Predictor, int8 file (folded at load)",
        "Predictor, fp16 file (folded at load)", "Predictor, int8 file, fold_weights=False",
        "LiteRT (XNNPACK)", "Keras under tf.function", "Keras eager",
    ):  # fmt: skip
        assert name in rows, name
        assert rows[name][1] == "1", (name, rows[name])  # the thread count in effect, every contender
    assert "intra-op threads 1, inter-op 1 (read back from tf.config)" in table
    assert "RSS after load" in table


def test_bench_passes_on_the_childs_refusal_of_a_hostile_source():
    from conftest import ROOT

    done = run_cli(
        "bench",
        SEED_ONNX,
        "--keras",
        ROOT / "tests" / "fixtures" / "legacy" / "lambda.h5",
        "--seconds",
        "0.1",
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: refused to load: Lambda layer")
    assert "Traceback" not in done.stderr


# -- issue 25, item 10 -------------------------------------------------------------------------------------


def _two_tables_model(path, rows=(50, 5)) -> None:
    """Token ids (batch, time) index two embedding tables, the first larger than the second."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    tables = [numpy_helper.from_array(rng.normal(0, 1, (n, 16)).astype(np.float32), f"table{i}")
              for i, n in enumerate(rows)]  # fmt: skip
    nodes = [
        helper.make_node("Gather", ["table0", "ids"], ["e0"], axis=0),
        helper.make_node("Gather", ["table1", "ids"], ["e1"], axis=0),
        helper.make_node("Add", ["e0", "e1"], ["sum"]),
        helper.make_node("ReduceMean", ["sum"], ["y"], axes=[1, 2], keepdims=0),
    ]
    model = helper.make_model(
        helper.make_graph(
            nodes,
            "two-tables",
            [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", 6])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch"])],
            tables,
        ),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    model.ir_version = 8
    onnx.save(model, path)


def test_quantize_draws_token_ids_below_the_smallest_table(tmp_path):
    """The ids must be valid for every table: the first Gather's 50 rows would index past the second's 5."""
    src, out = tmp_path / "tables.onnx", tmp_path / "tables-int8.onnx"
    _two_tables_model(src)
    result = quantize(src, out, "int8")
    assert out.is_file() and result.tensors == 2
    assert graph.vocab_size(onnx.load(src)) == 5


def test_bench_leaves_nothing_in_the_temporary_folder(tmp_path):
    """What a run makes (the TensorFlow child's folder, its stderr.txt, the sandbox's folders) is removed, on
    success and when the child refuses the source."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from conftest import ROOT

    tmp = tmp_path / "tmp"
    tmp.mkdir()
    exe = Path(sys.executable).parent / "edgeattn"
    env = {**os.environ, "TMPDIR": str(tmp)}
    runs = {
        "ok": (0, ["--keras", MODELS / "seed.keras"]),
        "refused": (2, ["--keras", ROOT / "tests" / "fixtures" / "legacy" / "lambda.h5"]),
    }
    for name, (code, extra) in runs.items():
        done = subprocess.run(
            [exe, "bench", SEED_ONNX, *extra, "--seconds", "0.1", "--batch", "1"],
            capture_output=True, text=True, env=env, cwd=tmp_path,
        )  # fmt: skip
        assert done.returncode == code, done.stderr
        # (.ses: onnxruntime's own session-id file, one per temporary folder, kept and reused by every process)
        assert sorted(p.name for p in tmp.iterdir() if p.name != ".ses") == [], name


def test_verify_names_the_vendor_op_of_a_file_that_records_no_source(tmp_path):
    model = onnx.load(SEED_ONNX)
    tanh = next(n for n in model.graph.node if n.op_type == "Tanh")
    tanh.op_type, tanh.domain = "FastGelu", "com.microsoft"
    model.opset_import.append(onnx.helper.make_opsetid("com.microsoft", 1))
    kept = [p for p in model.metadata_props if not p.key.startswith("edgeattn.source")]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    onnx.save(model, tmp_path / "vendor.onnx")
    done = run_cli("verify", tmp_path / "vendor.onnx")
    assert done.returncode == 1, done.stderr
    assert "com.microsoft:FastGelu" in done.stderr.splitlines()[0]
    # the same file with its ops standard again: the missing source is what verify says
    tanh.op_type, tanh.domain = "Tanh", ""
    del model.opset_import[-1]
    onnx.save(model, tmp_path / "plain.onnx")
    done = run_cli("verify", tmp_path / "plain.onnx")
    assert done.returncode == 2 and "records no source model" in done.stderr
