"""graphs.stepgraph: the reshapes tf2onnx writes around a product on one time step go, the outputs stay."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from edgeattn.graphs import stepgraph


def _dense_on_one_step(back=(-1, 1, 3)) -> onnx.ModelProto:
    """y = x @ W + b on x of shape (batch, 1, 4), written as tf2onnx writes it: flatten, MatMul, restore, Add."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.normal(size=(4, 3)).astype(np.float32), "W"),
        numpy_helper.from_array(rng.normal(size=(3,)).astype(np.float32), "b"),
        numpy_helper.from_array(np.array([-1, 4], np.int64), "flat"),
        numpy_helper.from_array(np.array(back, np.int64), "back"),
        numpy_helper.from_array(np.array([-1, 1, 4], np.int64), "same"),
    ]
    nodes = [
        helper.make_node("Reshape", ["x", "same"], ["x3"]),  # a reshape before a reshape
        helper.make_node("Reshape", ["x3", "flat"], ["rows"]),
        helper.make_node("MatMul", ["rows", "W"], ["product"]),
        helper.make_node("Add", ["product", "b"], ["biased"]),
        helper.make_node("Reshape", ["biased", "back"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "step",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_dense_on_one_step_loses_its_reshapes_and_keeps_its_outputs():
    model = _dense_on_one_step()
    x = np.random.default_rng(1).normal(size=(5, 1, 4)).astype(np.float32)

    def run(m):
        session = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        return session.run(None, {"x": x})[0]

    before = run(model)
    assert stepgraph.fewer_reshapes(model) > 0
    assert [n.op_type for n in model.graph.node] == ["MatMul", "Add"]
    assert np.max(np.abs(run(model) - before)) < 1e-6


def test_a_product_restored_to_another_shape_keeps_its_reshapes():
    model = _dense_on_one_step(back=(-1, 3))  # (batch, 3): not the step's (batch, 1, 3)
    assert stepgraph.fewer_reshapes(model) == 1  # only the reshape of a reshape goes
    assert [n.op_type for n in model.graph.node] == ["Reshape", "MatMul", "Add", "Reshape"]
