"""onnxruntime's own fused kernels, in memory only (edgeattn.graphs.ortfusion, issue 26 item 2).

The reference is onnxruntime's run of the stored, standard graph: the rewrite must not move the outputs.
"""

from __future__ import annotations

import builtins
from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import ROOT

from edgeattn import runtime
from edgeattn.convert.export import export
from edgeattn.graphs import ortfusion
from edgeattn.runtime import Predictor

EDGE = ROOT / "tests" / "fixtures" / "edge"


@pytest.fixture(scope="module")
def block_onnx(tmp_path_factory):
    out = tmp_path_factory.mktemp("ortfusion") / "ts-block1.onnx"
    export(EDGE / "ts-block1.keras", out)
    return out


def _session(data: bytes):
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def test_the_packed_attention_becomes_one_attention_kernel_with_the_same_outputs(block_onnx):
    data = block_onnx.read_bytes()
    model = onnx.load_from_string(data)
    before = len(model.graph.node)
    assert ortfusion.fuse_attention(model) == 1
    assert len(model.graph.node) == before - 11  # the 12 nodes of the pattern became one
    fused = ortfusion.for_cpu(data)
    ops = Counter(n.op_type for n in onnx.load_from_string(fused).graph.node)
    assert ops["Attention"] == 1 and ops["Split"] == ops["Softmax"] == 0, ops
    x = np.random.default_rng(0).normal(size=(7, 24, 3)).astype(np.float32)
    (want,) = _session(data).run(None, {"x": x})
    (got,) = _session(fused).run(None, {"x": x})
    assert np.abs(got - want).max() < 1e-5
    before = block_onnx.read_bytes()
    Predictor(block_onnx, threads=1).predict(x)
    assert block_onnx.read_bytes() == before  # the rewrite is in memory: the file is untouched


def test_an_intermediate_read_outside_the_pattern_keeps_the_attention_standard(block_onnx):
    model = onnx.load(block_onnx)
    softmax = next(n for n in model.graph.node if n.op_type == "Softmax")
    model.graph.output.append(
        onnx.helper.make_tensor_value_info(softmax.output[0], onnx.TensorProto.FLOAT, None)
    )
    assert ortfusion.fuse_attention(model) == 0


def test_without_onnx_the_bytes_run_as_stored(block_onnx, monkeypatch):
    real = builtins.__import__

    def no_onnx(name, *args, **kwargs):
        if name == "onnx" or name.startswith("onnx."):
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_onnx)
    data = block_onnx.read_bytes()
    assert ortfusion.for_cpu(data) is data


def _dense_model(time) -> bytes:
    """x (batch, time, 4) -> Dense(6, relu) -> Dense(3), as the export writes them: 3-D MatMul + Add (+ Relu)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(3)
    weights = {
        "w1": rng.normal(size=(4, 6)),
        "b1": rng.normal(size=6),
        "w2": rng.normal(size=(6, 3)),
        "b2": rng.normal(size=(1, 3)),
    }
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["m1"]),
        helper.make_node("Add", ["m1", "b1"], ["a1"]),
        helper.make_node("Relu", ["a1"], ["r1"]),
        helper.make_node("MatMul", ["r1", "w2"], ["m2"]),
        helper.make_node("Add", ["b2", "m2"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "dense",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", time, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in weights.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


@pytest.mark.parametrize("time", [7, "time"], ids=["fixed-time", "free-time"])
def test_a_dense_over_time_runs_as_one_gemm_with_its_bias_and_activation(time):
    data = _dense_model(time)
    fused = ortfusion.for_cpu(data)
    ops = [n.op_type for n in onnx.load_from_string(fused).graph.node]
    assert ops.count("Gemm") == 2 and "MatMul" not in ops and "Add" not in ops, ops
    assert ops.count("Shape") == (1 if time == "time" else 0), ops  # the leading axes read once
    for length in (7,) if time == 7 else (1, 7, 30):
        x = np.random.default_rng(length).normal(size=(5, length, 4)).astype(np.float32)
        (want,) = _session(data).run(None, {"x": x})
        (got,) = _session(fused).run(None, {"x": x})
        assert got.shape == want.shape and np.abs(got - want).max() < 1e-5


def test_the_predictor_takes_the_dense_rewrite_and_a_low_opset_keeps_the_stored_graph(tmp_path):
    """Through the Predictor (runtime.for_runtime), not only ortfusion.for_cpu; at opset 13 the rewrite, which
    needs Shape(start, end) from opset 15, is not made and the model still loads."""
    from onnx import helper, numpy_helper

    for opset, gemms in ((17, 2), (13, 0)):
        model = onnx.load_from_string(_dense_model("time"))
        model.opset_import[0].version = opset
        if opset >= 17:  # a LayerNormalization, a transformer's op: the Predictor's cue that there is work
            model.graph.node.append(helper.make_node("LayerNormalization", ["y", "g", "b"], ["z"], axis=-1))
            model.graph.initializer.extend([numpy_helper.from_array(np.ones(3, np.float32), n) for n in "gb"])
            model.graph.output[0].name = "z"
        data = model.SerializeToString()
        fused = runtime.for_runtime(data) if opset >= 17 else ortfusion.for_cpu(data)
        ops = [n.op_type for n in onnx.load_from_string(fused).graph.node]
        assert ops.count("Gemm") == gemms, (opset, ops)
        _session(fused)  # loads
        path = tmp_path / f"d{opset}.onnx"
        path.write_bytes(data)
        x = np.random.default_rng(opset).normal(size=(2, 5, 4)).astype(np.float32)
        (want,) = _session(data).run(None, {"x": x})
        assert np.abs(Predictor(path, threads=1).predict(x) - want).max() < 1e-5
