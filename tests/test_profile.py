"""bench: onnxruntime's per-kernel profile of the Predictor (--profile), the Predictor on the stored graph
(--no-fuse-for-runtime) and the floor, which writes what the model reads of its recurrent nodes."""

from __future__ import annotations

import json
import re
import tempfile
from collections import Counter

import numpy as np
import onnx
import pytest
from conftest import MODELS, ROOT, run_cli
from onnx import TensorProto, helper, numpy_helper

from edgeattn import runtime
from edgeattn.deploy import bench, profile

SEED_ONNX = MODELS / "seed.onnx"


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict:
    """One file of each kind bench takes: recurrent with attention, its int8 and fp16 copies, a transformer,
    a text model (token ids in, tokenizer rules in the file)."""
    from edgeattn.convert.export import export
    from edgeattn.deploy.quantize import quantize

    folder = tmp_path_factory.mktemp("profile")
    files = {"recurrent": SEED_ONNX}
    for mode in ("int8", "fp16"):
        files[mode] = folder / f"seed.{mode}.onnx"
        quantize(SEED_ONNX, files[mode], mode)
    files["transformer"] = folder / "k2-transformer.onnx"
    export(ROOT / "tests" / "fixtures" / "keras2" / "k2-transformer.h5", files["transformer"])
    files["text"] = folder / "text-classifier.onnx"
    export(ROOT / "tests" / "fixtures" / "text" / "text-classifier.keras", files["text"])
    return files


def _session_graph(path, fuse: bool, tmp_path) -> list[onnx.NodeProto]:
    """The nodes of the graph onnxruntime builds for the Predictor (its options, one thread, weights folded)."""
    options = runtime.session_options(1, True, fuse)
    options.optimized_model_filepath = str(tmp_path / "session.onnx")
    runtime.make_session(path.read_bytes(), options, ["CPUExecutionProvider"], fuse)
    return list(onnx.load(tmp_path / "session.onnx").graph.node)


@pytest.mark.parametrize("kind", ["recurrent", "int8", "fp16", "transformer", "text"])
def test_the_profile_lists_every_kernel_of_the_session(kind, models, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the profile's private folder goes
    profiles = profile.profile(models[kind], batches=(1, 4), threads=1, seconds=0.1)
    nodes = _session_graph(models[kind], True, tmp_path)
    assert [p.batch for p in profiles] == [1, 4]
    for p in profiles:
        # every node of the session's graph ran as one kernel, each of its op type
        assert p.kernel_count == len(nodes), (p.kernel_count, len(nodes))
        assert Counter(k.op_type for k in p.kernels) == Counter(n.op_type for n in nodes)
        assert sum(k.share for k in p.kernels) == pytest.approx(1.0)
        assert p.runs >= 3 and all(k.calls == p.runs for k in p.kernels)
        assert [k.total_us for k in p.kernels] == sorted((k.total_us for k in p.kernels), reverse=True)
        assert 0 < p.kernel_us <= p.run_us * 1.01
    assert not any(f.name.startswith("edgeattn-profile-") for f in tmp_path.iterdir())  # removed after
    if kind in ("int8", "fp16"):  # weights folded at load: no dequantizing kernel runs
        assert not {"DequantizeLinear", "Cast"} & {k.op_type for k in profiles[0].kernels}
    if kind == "recurrent":
        assert profiles[0].kernels[0].op_type == "LSTM" or profiles[1].kernels[0].op_type == "LSTM"


def test_read_profile_leaves_out_the_warm_up_runs():
    def run(ts, dur):
        return {"cat": "Session", "name": "model_run", "ts": ts, "dur": dur}

    def kernel(name, op, ts, dur):
        return {"cat": "Node", "name": f"{name}_kernel_time", "ts": ts, "dur": dur, "args": {"op_name": op}}

    events = [run(0, 100), kernel("a", "MatMul", 1, 90), run(200, 10), kernel("a", "MatMul", 201, 6)]
    events += [
        kernel("b", "Add", 207, 2),
        run(300, 12),
        kernel("a", "MatMul", 301, 6),
        kernel("b", "Add", 307, 2),
    ]
    got = profile.read_profile(events, batch=2, warm=1)
    assert got.runs == 2 and got.run_us == 11.0 and got.kernel_us == 8.0
    assert [(k.name, k.op_type, k.calls, k.total_us, k.share, k.us_per_call) for k in got.kernels] == [
        ("a", "MatMul", 2, 12.0, 0.75, 6.0),
        ("b", "Add", 2, 4.0, 0.25, 2.0),
    ]


def _table(stdout: str, batch: int) -> list[str]:
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"profile, batch {batch}:"))
    end = next(i for i in range(start, len(lines)) if lines[i].lstrip().startswith("total:"))
    return lines[start : end + 1]


def test_bench_profile_through_the_cli(models, tmp_path):
    out = tmp_path / "bench.json"
    done = run_cli(
        "bench", models["transformer"], "--batch", "1,3", "--seconds", "0.1", "--threads", "1", "--profile",
        "--json", out,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    assert [p["batch"] for p in report["profile"]] == [1, 3]
    nodes = _session_graph(models["transformer"], True, tmp_path)
    for entry in report["profile"]:
        table = _table(done.stdout, entry["batch"])
        assert f"{entry['kernel_count']} kernels" in table[0] and entry["kernel_count"] == len(nodes)
        assert len(entry["kernels"]) == entry["kernel_count"]
        assert sum(k["share"] for k in entry["kernels"]) == pytest.approx(1.0)
        rows = table[2:-1]
        if entry["kernel_count"] > profile.TOP:  # 25 of them, then the rest
            assert len(rows) == profile.TOP + 1 and "more kernels" in rows[-1]
        else:
            assert len(rows) == entry["kernel_count"] and "more kernels" not in table[-2]
        shown = [float(re.search(r"([\d.]+)%", row).group(1)) for row in rows]
        assert sum(shown) == pytest.approx(100.0, abs=0.05 * len(shown))
        top = entry["kernels"][: profile.TOP]
        for row, kernel in zip(rows, top):  # the table is the JSON's order: most time first
            assert kernel["op_type"] in row
        assert {k["op_type"] for k in top} <= {n.op_type for n in nodes}
        assert re.search(rf"total: {len(nodes)} kernels\s+100\.0%", table[-1])
    assert {"Attention", "FusedMatMul", "FusedGemm", "Gelu"} & {
        k["op_type"] for k in report["profile"][0]["kernels"]
    }


def test_bench_on_the_stored_graph_times_the_fused_predictor_beside_it(models, tmp_path):
    out = tmp_path / "bench.json"
    done = run_cli(
        "bench", models["transformer"], "--batch", "2", "--seconds", "0.1", "--threads", "1",
        "--no-fuse-for-runtime", "--profile", "--json", out,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    rows = {r["name"]: r for r in report["rows"]}
    assert set(rows) == {bench.PREDICTOR, bench.FUSED}
    assert rows[bench.FUSED]["max_abs_vs_predictor"] <= 1e-5  # the same model, fused or not
    assert rows[bench.FUSED]["x"]["Predictor"]["median"] > 0
    assert "fuse_for_runtime=False" in report["notes"][bench.PREDICTOR]
    ops = {k["op_type"] for k in report["profile"][0]["kernels"]}  # the profile is of the stored graph
    assert "MatMul" in ops and not ops & {"FusedMatMul", "FusedGemm", "Gelu", "BiasGelu"}, ops
    assert report["profile"][0]["kernel_count"] == len(_session_graph(models["transformer"], False, tmp_path))


def test_bench_profile_of_an_ort_file_is_refused_in_one_line(tmp_path):
    ort_file = tmp_path / "model.ort"
    ort_file.write_bytes(b"\x00\x00\x00\x00ORTM" + b"\x00" * 64)
    done = run_cli("bench", ort_file, "--profile")
    assert done.returncode == 2
    assert (
        done.stderr.startswith("error: ") and "ORT format" in done.stderr and "Traceback" not in done.stderr
    )


# -- the floor: the recurrent nodes alone, writing what the model reads of them -----------------------------


def _read(model: onnx.ModelProto) -> set[str]:
    return {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}


def test_the_floor_of_the_seed_writes_all_hidden_states_as_its_attention_reads_them():
    model = onnx.load(SEED_ONNX)
    (lstm,) = [n for n in model.graph.node if n.op_type == "LSTM"]
    read = [bool(name) and name in _read(model) for name in lstm.output]
    assert read == [True, True, False]  # the attention reads Y (every step) and Y_h (its query); not Y_c
    floor, sources = bench.floor_model(model)
    assert [o.name for o in floor.graph.output] == ["Y0", "Y_h0"]
    # run: the floor's outputs are the values the model's own node writes, on the same inputs
    from edgeattn.graphs.onnxfile import open_session, tensor_values

    x = np.random.default_rng(5).random((3, 10, 1), dtype=np.float32)
    (feed,) = bench.floor_feeds(model, sources, [{"x": x}])
    y, y_h = open_session(floor, ["cpu"], threads=1).run(None, feed)
    (inside,) = tensor_values(model, lstm.output[:2], [{"x": x}])
    assert y.shape == (10, 1, 3, 64) and y_h.shape == (1, 3, 64)
    np.testing.assert_allclose(y, inside[lstm.output[0]], atol=1e-6)
    np.testing.assert_allclose(y_h, inside[lstm.output[1]], atol=1e-6)


def _lstm_model(read: str) -> onnx.ModelProto:
    """x (time, batch, 2) -> LSTM(4) -> the model's output reads ``read``: "Y_h" (the final state, squeezed) or
    "Y" (every state, as the graph output itself)."""
    rng = np.random.default_rng(6)
    weights = [
        numpy_helper.from_array(rng.normal(size=shape).astype(np.float32), name)
        for name, shape in (("W", (1, 16, 2)), ("R", (1, 16, 4)), ("B", (1, 32)))
    ]
    nodes = [helper.make_node("LSTM", ["x", "W", "R", "B"], ["lstm_y", "lstm_h", "lstm_c"], hidden_size=4)]
    if read == "Y_h":
        weights.append(numpy_helper.from_array(np.array([0], np.int64), "axes"))
        nodes.append(helper.make_node("Squeeze", ["lstm_h", "axes"], ["out"]))
    else:
        nodes.append(helper.make_node("Identity", ["lstm_y"], ["out"]))
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["time", "batch", 2])
    shape = ["batch", 4] if read == "Y_h" else ["time", 1, "batch", 4]
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, shape)
    graph = helper.make_graph(nodes, "lstm", [x], [out], weights)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize(("read", "outputs"), [("Y_h", ["Y_h0"]), ("Y", ["Y0"])])
def test_the_floor_writes_only_what_the_model_reads(read, outputs):
    from edgeattn.graphs.onnxfile import open_session

    model = _lstm_model(read)
    onnx.checker.check_model(model)
    floor, sources = bench.floor_model(model)
    assert [o.name for o in floor.graph.output] == outputs
    assert sources == {"X0": "x"}
    x = np.random.default_rng(7).random((5, 3, 2), dtype=np.float32)
    (got,) = open_session(floor, ["cpu"], threads=1).run(None, {"X0": x})
    (want,) = open_session(model, ["cpu"], threads=1).run(None, {"x": x})
    np.testing.assert_allclose(got.reshape(want.shape), want, atol=1e-6)
