"""Standard ops in place of tf2onnx's node chains (edgeattn.fusion), on graphs built here in tf2onnx's form."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeattn import fusion

RNG = np.random.default_rng(0)
GAMMA, BETA = RNG.random(8).astype(np.float32) + 0.5, RNG.random(8).astype(np.float32)


def _moments_model() -> onnx.ModelProto:
    """Keras' LayerNormalization(epsilon=1e-3) over (batch, 4, 8), as tf2onnx writes tf.nn.moments."""
    n = helper.make_node
    nodes = [
        n("GlobalAveragePool", ["x"], ["mean"]),
        n("Sub", ["x", "mean"], ["d"]),
        n("Mul", ["d", "d"], ["d2"]),
        n("GlobalAveragePool", ["d2"], ["var"]),
        n("Add", ["var", "eps"], ["ve"]),
        n("Sqrt", ["ve"], ["sd"]),
        n("Reciprocal", ["sd"], ["r"]),
        n("Mul", ["r", "gamma"], ["s"]),
        n("Neg", ["mean"], ["nm"]),
        n("Mul", ["nm", "s"], ["ms"]),
        n("Add", ["ms", "beta"], ["b"]),
        n("Mul", ["x", "s"], ["xs"]),
        n("Add", ["xs", "b"], ["y"]),
    ]
    constants = [
        numpy_helper.from_array(np.array(1e-3, np.float32), "eps"),
        numpy_helper.from_array(GAMMA, "gamma"),
        numpy_helper.from_array(BETA, "beta"),
    ]
    g = helper.make_graph(
        nodes,
        "ln",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4, 8])],
        constants,
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _feeds():
    return [{"x": RNG.normal(0, 3, (b, 4, 8)).astype(np.float32)} for b in (2, 5)]


def test_the_moments_chain_becomes_one_layer_normalization():
    model = _moments_model()
    assert fusion.fuse_layer_norms(model, _feeds()) == 1
    assert [n.op_type for n in model.graph.node] == ["LayerNormalization"]
    x = RNG.normal(0, 3, (3, 4, 8)).astype(np.float32)
    (y,) = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})
    mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    np.testing.assert_allclose(y, (x - mean) / np.sqrt(var + 1e-3) * GAMMA + BETA, atol=1e-5)


def test_a_fusion_that_moves_the_outputs_is_not_used(monkeypatch):
    model = _moments_model()
    monkeypatch.setattr(fusion, "TOLERANCE", -1.0)  # any difference at all is too much
    assert fusion.fuse_layer_norms(model, _feeds()) == 0
    assert len(model.graph.node) == 13


def test_no_layer_normalization_below_opset_17():
    model = _moments_model()
    model.opset_import[0].version = 16
    assert fusion.fuse_layer_norms(model, _feeds()) == 0


def _gather_model(index_nodes: list, rows: int = 5) -> onnx.ModelProto:
    g = helper.make_graph(
        [*index_nodes, helper.make_node("Gather", ["table", "idx"], ["y"], axis=0)],
        "embedding",
        [helper.make_tensor_value_info("t", TensorProto.INT32, ["batch", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3, 2])],
        [
            numpy_helper.from_array(np.arange(rows * 2, dtype=np.float32).reshape(rows, 2), "table"),
            numpy_helper.from_array(np.array(0, np.int32), "zero"),
            numpy_helper.from_array(np.array(rows, np.int32), "rows"),
            numpy_helper.from_array(np.array(1, np.int32), "one"),
        ],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


KERAS_NEGATIVE_IDS = [  # where(t < 0, t + rows, t), as Keras 3's Embedding comes out of tf2onnx
    helper.make_node("Less", ["t", "zero"], ["neg"]),
    helper.make_node("Cast", ["neg"], ["negi"], to=TensorProto.INT32),
    helper.make_node("Add", ["t", "rows"], ["shifted"]),
    helper.make_node("Mul", ["negi", "shifted"], ["a"]),
    helper.make_node("Not", ["neg"], ["pos"]),
    helper.make_node("Cast", ["pos"], ["posi"], to=TensorProto.INT32),
    helper.make_node("Mul", ["t", "posi"], ["b"]),
    helper.make_node("Add", ["a", "b"], ["idx"]),
]


@pytest.mark.parametrize(
    ("nodes", "plain"),
    [(KERAS_NEGATIVE_IDS, True), ([helper.make_node("Add", ["t", "one"], ["idx"])], False)],
    ids=["negative ids wrapped", "ids shifted by one"],
)
def test_a_gather_reads_the_token_input_only_where_gather_would_do_the_same(nodes, plain):
    model = _gather_model(nodes)
    t = np.array([[0, 3, -1], [-5, 2, 1]], np.int32)
    (want,) = ort.InferenceSession(model.SerializeToString()).run(None, {"t": t})
    assert fusion.plain_gather_indices(model) == int(plain)
    ops = [n.op_type for n in model.graph.node]
    assert ops == ["Gather"] if plain else len(ops) == 2
    (got,) = ort.InferenceSession(model.SerializeToString()).run(None, {"t": t})
    np.testing.assert_array_equal(got, want)
