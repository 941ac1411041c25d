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

from edgeattn.convert.export import export
from edgeattn.graphs import ortfusion

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
    assert onnx.load(block_onnx).graph.node == onnx.load_from_string(data).graph.node  # the file is untouched


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
