"""Constant Reshape targets in place of the shape computations tf2onnx writes (edgeattn.shapes)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from edgeattn import shapes


def _dynamic_reshape_model() -> onnx.ModelProto:
    """x (batch, 6) -> Reshape to (batch, 2, 3), its target computed from Shape(x) as tf2onnx writes it."""
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Gather", ["shape", "zero"], ["batch"], axis=0),
        helper.make_node("Unsqueeze", ["batch", "axes"], ["batch1"]),
        helper.make_node("Concat", ["batch1", "tail"], ["target"], axis=0),
        helper.make_node("Reshape", ["x", "target"], ["y"]),
    ]
    constants = [
        numpy_helper.from_array(np.array(0, np.int64), "zero"),
        numpy_helper.from_array(np.array([0], np.int64), "axes"),
        numpy_helper.from_array(np.array([2, 3], np.int64), "tail"),
    ]
    g = helper.make_graph(
        nodes,
        "dynamic",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2, 3])],
        constants,
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_a_target_that_follows_the_batch_becomes_a_constant():
    model = _dynamic_reshape_model()
    assert shapes.freeze_reshapes(model, vocab=None, length=None) == 4  # Shape, Gather, Unsqueeze, Concat
    assert [n.op_type for n in model.graph.node] == ["Reshape"]
    target = next(t for t in model.graph.initializer if t.name == model.graph.node[0].input[1])
    assert numpy_helper.to_array(target).tolist() == [0, 2, 3]  # 0: the input's batch axis, copied
    x = np.arange(7 * 6, dtype=np.float32).reshape(7, 6)
    (y,) = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})
    np.testing.assert_array_equal(y, x.reshape(7, 2, 3))


def test_a_rewrite_that_changes_the_outputs_is_not_used(monkeypatch):
    model = _dynamic_reshape_model()
    monkeypatch.setattr(shapes, "_constant_target", lambda outputs, inputs, allow_zero: [-1, 3, 2])
    assert shapes.freeze_reshapes(model, vocab=None, length=None) == 0
    assert [n.op_type for n in model.graph.node] == ["Shape", "Gather", "Unsqueeze", "Concat", "Reshape"]


def test_constant_targets_from_observed_shapes():
    # the batch axis copied (0), the rest fixed
    assert shapes._constant_target([(2, 12, 8), (3, 12, 8)], [(2, 96), (3, 96)], False) == [0, 12, 8]
    # batch x heads folded into one axis: the one axis left to infer
    assert shapes._constant_target([(4, 12, 8), (6, 12, 8)], [(2, 2, 12, 8), (3, 2, 12, 8)], False) == [
        -1,
        12,
        8,
    ]
    # batch and time both free, neither copied from the input: no constant can say it
    outputs, inputs = [(2, 12, 16), (3, 12, 16), (2, 15, 16)], [(24, 16), (36, 16), (30, 16)]
    assert shapes._constant_target(outputs, inputs, False) is None
    # allowzero=1: 0 would mean an empty axis, not a copy
    assert shapes._constant_target([(2, 12, 8), (3, 12, 8)], [(2, 96), (3, 96)], True) == [-1, 12, 8]
