"""Fewer kernels around attention's products (edgeattn.graphs.matmuls), on graphs built here in tf2onnx's form and
checked against NumPy."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeattn.graphs import matmuls

RNG = np.random.default_rng(0)
W = RNG.normal(size=(6, 4)).astype(np.float32)
BIAS = RNG.normal(size=4).astype(np.float32)


def _run(model: onnx.ModelProto, feed: dict) -> list[np.ndarray]:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)


def _dense_over_concat(bias: bool, rank: int = 2) -> onnx.ModelProto:
    """tanh(concat([a, b]) @ W (+ bias)), a of width 2 and b of width 4, as tf2onnx writes a Keras Dense."""
    n = helper.make_node
    nodes = [n("Concat", ["a", "b"], ["cat"], axis=-1), n("MatMul", ["cat", "w"], ["mm"])]
    nodes += (
        [n("Add", ["mm", "bias"], ["pre"]), n("Tanh", ["pre"], ["y"])] if bias else [n("Tanh", ["mm"], ["y"])]
    )
    lead = ["batch"] + [3] * (rank - 2)
    g = helper.make_graph(
        nodes,
        "dense",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, [*lead, 2]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, [*lead, 4]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [*lead, 4])],
        [numpy_helper.from_array(W, "w"), numpy_helper.from_array(BIAS, "bias")][: 2 if bias else 1],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _concat_feeds(rank: int = 2) -> list[dict]:
    lead = (3,) * (rank - 2)
    return [
        {
            "a": RNG.normal(size=(b, *lead, 2)).astype(np.float32),
            "b": RNG.normal(size=(b, *lead, 4)).astype(np.float32),
        }
        for b in (2, 5)
    ]


@pytest.mark.parametrize("bias", [True, False], ids=["with bias", "no bias"])
def test_a_dense_over_a_concatenation_becomes_a_gemm_of_its_parts(bias):
    model = _dense_over_concat(bias)
    assert matmuls.split_concat_products(model, _concat_feeds()) == 1
    ops = [n.op_type for n in model.graph.node]
    assert ops == ["Gemm" if bias else "MatMul", "Gemm", "Tanh"]
    assert {t.name for t in model.graph.initializer}.isdisjoint({"w", "bias"})  # the old weights are gone
    feed = _concat_feeds()[1]
    want = np.tanh(np.concatenate([feed["a"], feed["b"]], axis=1) @ W + (BIAS if bias else 0))
    np.testing.assert_allclose(_run(model, feed)[0], want, atol=1e-6)


def test_a_concatenation_of_rank_three_parts_is_left_alone():
    model = _dense_over_concat(bias=True, rank=3)
    assert matmuls.split_concat_products(model, _concat_feeds(rank=3)) == 0
    assert [n.op_type for n in model.graph.node] == ["Concat", "MatMul", "Add", "Tanh"]


WQ = RNG.normal(size=(8, 8)).astype(np.float32)


def _column_attention(opset: int, query_of_state: bool = False) -> onnx.ModelProto:
    """The seed's attention pooling as tf2onnx writes it: states X (batch, time, 8) and a query u (batch, 8);
    scores X.u as a column, softmax over time (an output), and the weighted sum of X (an output). With
    ``query_of_state``, u is ``Squeeze(h, 0) @ WQ`` of a final state h (1, batch, 8), as in the seed model."""
    n = helper.make_node

    def axes(op, source, out, value):
        if opset >= 13:
            return n(op, [source, f"{out}_axes"], [out]), numpy_helper.from_array(
                np.array(value, np.int64), f"{out}_axes"
            )
        return n(op, [source], [out], axes=value), None

    made = (
        [axes("Squeeze", "h", "h2", [0]), (n("MatMul", ["h2", "wq"], ["u"]), None)] if query_of_state else []
    )
    made += [
        axes("Unsqueeze", "u", "u3", [2]),
        (n("MatMul", ["x", "u3"], ["s3"]), None),
        axes("Squeeze", "s3", "s", [2]),
        (n("Softmax", ["s"], ["weights"], axis=1), None),
        axes("Unsqueeze", "weights", "w3", [1]),
        (n("MatMul", ["w3", "x"], ["c3"]), None),
        axes("Squeeze", "c3", "context", [1]),
    ]
    g = helper.make_graph(
        [node for node, _ in made],
        "attention",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 5, 8]),
            helper.make_tensor_value_info("h", TensorProto.FLOAT, [1, "batch", 8])
            if query_of_state
            else helper.make_tensor_value_info("u", TensorProto.FLOAT, ["batch", 8]),
        ],
        [
            helper.make_tensor_value_info("weights", TensorProto.FLOAT, ["batch", 5]),
            helper.make_tensor_value_info("context", TensorProto.FLOAT, ["batch", 8]),
        ],
        [constant for _, constant in made if constant is not None] + [numpy_helper.from_array(WQ, "wq")],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def _attention_feeds(query_of_state: bool = False) -> list[dict]:
    return [
        {"x": RNG.normal(size=(b, 5, 8)).astype(np.float32)}
        | (
            {"h": RNG.normal(size=(1, b, 8)).astype(np.float32)}
            if query_of_state
            else {"u": RNG.normal(size=(b, 8)).astype(np.float32)}
        )
        for b in (2, 5)
    ]


@pytest.mark.parametrize("query_of_state", [False, True], ids=["query input", "query of a final state"])
@pytest.mark.parametrize("opset", [11, 17])
def test_attention_scores_become_a_row_that_feeds_the_weighted_sum_directly(opset, query_of_state):
    model = _column_attention(opset, query_of_state)
    assert matmuls.row_scores(model, _attention_feeds(query_of_state)) == 1
    nodes = list(model.graph.node)
    softmax = next(n for n in nodes if n.op_type == "Softmax")
    readers = sorted(n.op_type for n in nodes if softmax.output[0] in n.input)
    assert readers == ["MatMul", "Squeeze"]  # the weighted sum, and the weights output
    ops = [n.op_type for n in nodes]
    # the query's Unsqueeze stays for a query input; for a state's, a transpose of its product replaces it
    assert (ops.count("Unsqueeze"), ops.count("Squeeze")) == ((0, 2) if query_of_state else (1, 2))
    feed = _attention_feeds(query_of_state)[1]
    u = feed["h"][0] @ WQ if query_of_state else feed["u"]
    scores = np.einsum("bth,bh->bt", feed["x"], u)
    weights = np.exp(scores - scores.max(1, keepdims=True))
    weights /= weights.sum(1, keepdims=True)
    got_weights, got_context = _run(model, feed)
    np.testing.assert_allclose(got_weights, weights, atol=1e-6)
    np.testing.assert_allclose(got_context, np.einsum("bt,bth->bh", weights, feed["x"]), atol=1e-5)


def test_a_rewrite_that_moves_the_outputs_is_not_used(monkeypatch):
    monkeypatch.setattr(matmuls, "TOLERANCE", -1.0)  # any difference at all is too much
    dense, attention = _dense_over_concat(bias=True), _column_attention(17)
    assert matmuls.split_concat_products(dense, _concat_feeds()) == 0
    assert matmuls.row_scores(attention, _attention_feeds()) == 0
    assert [n.op_type for n in dense.graph.node] == ["Concat", "MatMul", "Add", "Tanh"]
    assert len(attention.graph.node) == 7
