"""Constant Reshape targets in place of the shape computations tf2onnx writes (edgeattn.graphs.shapes)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeattn.graphs import graph, layouts, rows, shapes


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
    monkeypatch.setattr(shapes, "constant_target", lambda outputs, inputs, allow_zero: [-1, 3, 2])
    assert shapes.freeze_reshapes(model, vocab=None, length=None) == 0
    assert [n.op_type for n in model.graph.node] == ["Shape", "Gather", "Unsqueeze", "Concat", "Reshape"]


def test_constant_targets_from_observed_shapes():
    # the batch axis copied (0), the rest fixed
    assert shapes.constant_target([(2, 12, 8), (3, 12, 8)], [(2, 96), (3, 96)], False) == [0, 12, 8]
    # batch x heads folded into one axis: the one axis left to infer
    assert shapes.constant_target([(4, 12, 8), (6, 12, 8)], [(2, 2, 12, 8), (3, 2, 12, 8)], False) == [
        -1,
        12,
        8,
    ]
    # batch and time both free, neither copied from the input: no constant can say it
    outputs, inputs = [(2, 12, 16), (3, 12, 16), (2, 15, 16)], [(24, 16), (36, 16), (30, 16)]
    assert shapes.constant_target(outputs, inputs, False) is None
    # allowzero=1: 0 would mean an empty axis, not a copy
    assert shapes.constant_target([(2, 12, 8), (3, 12, 8)], [(2, 96), (3, 96)], True) == [-1, 12, 8]


# -- observed shapes: rows unflattened, layout chains merged, shape arithmetic frozen (edgeattn.graphs.layouts) ---

N = helper.make_node
RNG = np.random.default_rng(0)


def _model(nodes, inputs, constants: dict, outputs=("y",), opset: int = 17) -> onnx.ModelProto:
    g = helper.make_graph(
        nodes,
        "layouts",
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, dims) for name, dims in inputs.items()],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in outputs],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in constants.items()],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def _run(model, feed):
    return ort.InferenceSession(model.SerializeToString()).run(None, feed)


def _same_after(rewrite, model, feed, atol: float = 0.0) -> int:
    """Run ``rewrite`` on ``model``; its outputs on ``feed`` (a size the probes do not use) must not move."""
    want = _run(model, feed)
    done = rewrite(model, None, None)
    for got, expected in zip(_run(model, feed), want):
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, atol=atol, rtol=0)
    return done


def _ops(model) -> list[str]:
    return [n.op_type for n in model.graph.node]


def _shape_of(source: str, out: str, axes: list[int], tail: list[int]) -> list:
    """tf2onnx's target shape: the source's leading axes (Shape, Gather) and a constant tail (Concat)."""
    return [
        N("Shape", [source], [f"{out}_shape"]),
        N("Gather", [f"{out}_shape", f"{out}_axes"], [f"{out}_lead"], axis=0),
        N("Concat", [f"{out}_lead", f"{out}_tail"], [out], axis=0),
    ], {f"{out}_axes": np.array(axes, np.int64), f"{out}_tail": np.array(tail, np.int64)}


def _dense_model(gemm: bool) -> onnx.ModelProto:
    """Dense(6) on x (batch, time, 4), as tf2onnx writes it: flatten the rows, product, restore the rows."""
    target, constants = _shape_of("x", "target", [0, 1], [6])
    product = (
        [N("Gemm", ["rows", "wt", "bias"], ["p"], transB=1)]
        if gemm
        else [N("MatMul", ["rows", "w"], ["p0"]), N("Add", ["p0", "bias"], ["p"])]
    )
    nodes = [N("Reshape", ["x", "flat"], ["rows"]), *product, *target, N("Reshape", ["p", "target"], ["y"])]
    w = RNG.normal(size=(4, 6)).astype(np.float32)
    constants.update(
        flat=np.array([-1, 4], np.int64), w=w, wt=w.T.copy(), bias=RNG.normal(size=6).astype(np.float32)
    )
    return _model(nodes, {"x": ["batch", "time", 4]}, constants)


@pytest.mark.parametrize("gemm", [False, True], ids=["MatMul + Add", "Gemm"])
def test_a_dense_on_a_sequence_takes_the_sequence_without_reshapes(gemm):
    model = _dense_model(gemm)
    x = RNG.normal(size=(7, 9, 4)).astype(np.float32)
    assert _same_after(rows.unflatten_rows, model, {"x": x}, atol=1e-5) == 1
    assert _ops(model) == ["MatMul", "Add"]  # no Reshape, no Shape/Gather/Concat
    assert model.graph.node[0].input[0] == "x"


def test_batched_products_over_flattened_heads_run_on_the_heads():
    """Scores of (batch, heads, time, 8) queries and keys, flattened to (batch * heads, ...) for the product
    and restored after it, as tf2onnx writes an attention einsum."""
    target, constants = _shape_of("q", "target", [0, 1, 2, 2], [])
    constants["target_tail"] = np.array([], np.int64)
    nodes = [
        N("Reshape", ["q", "flat"], ["qf"]),
        N("Reshape", ["k", "flat"], ["kf"]),
        N("Transpose", ["kf"], ["kt"], perm=[0, 2, 1]),
        N("MatMul", ["qf", "kt"], ["s"]),
        N("Mul", ["s", "scale"], ["s2"]),
        N("Softmax", ["s2"], ["p"], axis=-1),
        *target,
        N("Reshape", ["p", "target"], ["y"]),
    ]
    constants.update(flat=np.array([-1, 0, 8], np.int64), scale=np.array(0.35, np.float32))
    # time at index 2 of q and 1 of the flattened rows: flat's 0 would copy the heads, so say it
    constants["flat"] = np.array([-1, 5, 8], np.int64)
    model = _model(nodes, {"q": ["batch", 2, 5, 8], "k": ["batch", 2, 5, 8]}, constants)
    feed = {name: RNG.normal(size=(4, 2, 5, 8)).astype(np.float32) for name in ("q", "k")}
    assert _same_after(rows.unflatten_rows, model, feed, atol=1e-6) == 2
    assert _ops(model) == ["Transpose", "MatMul", "Mul", "Softmax"]
    assert graph.attr(model.graph.node[0], "perm") == [0, 1, 3, 2]


def test_rows_are_not_unflattened_through_a_node_that_mixes_them(monkeypatch):
    model = _dense_model(gemm=False)
    model.graph.node.insert(3, N("Softmax", ["p"], ["mixed"], axis=0))  # over the rows: they mix
    model.graph.node[-1].input[0] = "mixed"
    before = _ops(model)
    monkeypatch.setattr(rows, "TOLERANCE", float("inf"))  # the match alone refuses, before any check
    assert rows.unflatten_rows(model, None, None) == 0
    assert _ops(model) == before
    monkeypatch.setattr(rows, "TOLERANCE", -1.0)  # a rewrite that moves the outputs at all is not used
    model = _dense_model(gemm=False)
    assert rows.unflatten_rows(model, None, None) == 0
    assert len(model.graph.node) == 7


def test_a_chain_of_layout_nodes_becomes_one_reshape_or_none():
    nodes = [
        N("Unsqueeze", ["x", "axis2"], ["a"]),  # (b, t, 1, 6)
        N("Reshape", ["a", "split"], ["b"]),  # (b, t, 1, 2, 3)
        N("Squeeze", ["b", "axis2"], ["c"]),  # (b, t, 2, 3)
        N("Relu", ["c"], ["r"]),
        N("Unsqueeze", ["r", "axis2"], ["d"]),  # back and forth: (b, t, 1, 2, 3) -> (b, t, 2, 3)
        N("Squeeze", ["d", "axis2"], ["e"]),
        N("Transpose", ["e"], ["f"], perm=[0, 2, 1, 3]),
        N("Transpose", ["f"], ["y"], perm=[0, 1, 3, 2]),
    ]
    constants = {"axis2": np.array([2], np.int64), "split": np.array([0, 0, 1, 2, 3], np.int64)}
    model = _model(nodes, {"x": ["batch", "time", 6]}, constants)
    x = RNG.normal(size=(5, 7, 6)).astype(np.float32)
    assert _same_after(layouts.merge_layout_chains, model, {"x": x}) == 5
    assert _ops(model) == ["Reshape", "Relu", "Transpose"]
    assert graph.attr(model.graph.node[-1], "perm") == [0, 2, 3, 1]


def test_a_transpose_over_axes_of_size_one_is_written_without_them():
    """tf2onnx's einsum: an axis of size 1 inserted, the heads moved, the axis taken out again."""
    nodes = [
        N("Unsqueeze", ["x", "axis3"], ["a"]),  # (b, t, 4, 1, 8)
        N("Transpose", ["a"], ["b"], perm=[0, 2, 1, 3, 4]),  # (b, 4, t, 1, 8)
        N("Reshape", ["b", "heads"], ["y"]),  # (b, 4, t, 8)
    ]
    constants = {"axis3": np.array([3], np.int64), "heads": np.array([0, 4, -1, 8], np.int64)}
    model = _model(nodes, {"x": ["batch", "time", 4, 8]}, constants)
    x = RNG.normal(size=(5, 7, 4, 8)).astype(np.float32)
    assert _same_after(layouts.squeeze_transposes, model, {"x": x}) == 2
    assert _ops(model) == ["Transpose"]
    assert graph.attr(model.graph.node[0], "perm") == [0, 2, 1, 3]


def test_shape_arithmetic_becomes_constants_or_one_shape_node():
    """A positional table sliced to the input's length (Keras 2's ``pe[:, :T]``: the end computed from the
    shape through casts and clamps); a scale computed from a fixed axis; a zero LSTM state of the batch's
    size."""
    nodes = [
        N("Shape", ["x"], ["s"]),
        N("Cast", ["s"], ["sf"], to=TensorProto.FLOAT),
        N("Min", ["sf", "big"], ["clamped"]),  # min(shape, 1e9): the same values
        N("Cast", ["clamped"], ["ends"], to=TensorProto.INT64),
        N("Slice", ["table", "starts", "ends"], ["pe"]),  # table[:B, :T, :3] of a (9, 40, 3) table
        N("Gather", ["sf", "two"], ["width"], axis=0),  # 3.0, whatever the batch and length
        N("Mul", ["x", "width"], ["xw"]),
        N("Add", ["xw", "pe"], ["y"]),
    ]
    constants = {
        "big": np.full(3, 1e9, np.float32),
        "table": RNG.normal(size=(9, 40, 3)).astype(np.float32),
        "starts": np.zeros(3, np.int64),
        "two": np.array(2, np.int64),
    }
    model = _model(nodes, {"x": ["batch", "time", 3]}, constants)
    x = RNG.normal(size=(5, 17, 3)).astype(np.float32)
    assert _same_after(shapes.freeze_shapes, model, {"x": x}) > 0
    assert _ops(model) == ["Shape", "Slice", "Mul", "Add"]
    shape = model.graph.node[0]
    assert shape.input[0] == "x" and model.graph.node[1].input[2] == shape.output[0]


def test_a_zero_initial_state_of_the_batch_size_is_left_to_the_lstm_default():
    nodes = [
        N("Shape", ["x"], ["s"]),
        N("Gather", ["s", "zero_index"], ["batch"], axis=0),
        N("Concat", ["ones", "batch", "width"], ["state_shape"], axis=0),
        N("Expand", ["zero", "state_shape"], ["h0"]),  # zeros (1, batch, 3)
        N("Transpose", ["x"], ["xt"], perm=[1, 0, 2]),
        N("LSTM", ["xt", "W", "R", "", "", "h0"], ["y"], hidden_size=3),
    ]
    constants = {
        "zero_index": np.array([0], np.int64),
        "ones": np.array([1], np.int64),
        "width": np.array([3], np.int64),
        "zero": np.array(0.0, np.float32),
        "W": RNG.normal(size=(1, 12, 2)).astype(np.float32),
        "R": RNG.normal(size=(1, 12, 3)).astype(np.float32),
    }
    model = _model(nodes, {"x": ["batch", 6, 2]}, constants)
    x = RNG.normal(size=(5, 6, 2)).astype(np.float32)
    assert _same_after(shapes.freeze_shapes, model, {"x": x}) == 4
    assert _ops(model) == ["Transpose", "LSTM"] and list(model.graph.node[1].input) == ["xt", "W", "R"]


def test_a_position_table_of_the_batch_size_becomes_one_row_that_broadcasts():
    """Positions 0..T-1 for every sample (cumsum of ones_like) looked up in a table, added to the tokens'
    vectors: the same row for every sample, so one constant row does (Keras' PositionEmbedding)."""
    nodes = [
        N("Shape", ["x"], ["s"]),
        N("Gather", ["s", "lead"], ["bt"], axis=0),
        N("ConstantOfShape", ["bt"], ["ones"], value=numpy_helper.from_array(np.array([1], np.int64))),
        N("CumSum", ["ones", "axis1"], ["cum"]),
        N("Sub", ["cum", "one"], ["positions"]),
        N("Gather", ["table", "positions"], ["pe"], axis=0),  # (batch, 6, 4)
        N("Add", ["x", "pe"], ["y"]),
    ]
    constants = {
        "lead": np.array([0, 1], np.int64),
        "axis1": np.array(1, np.int64),
        "one": np.array(1, np.int64),
        "table": RNG.normal(size=(6, 4)).astype(np.float32),
    }
    model = _model(nodes, {"x": ["batch", 6, 4]}, constants)
    x = RNG.normal(size=(5, 6, 4)).astype(np.float32)
    assert _same_after(shapes.freeze_shapes, model, {"x": x}) == 6
    assert _ops(model) == ["Add"]
    row = next(t for t in model.graph.initializer if t.name == model.graph.node[0].input[1])
    assert list(row.dims) == [1, 6, 4]


def test_two_inputs_of_their_own_lengths_are_probed_with_unequal_lengths():
    """Scores (batch, T_q, T_k) reshaped to (batch * T_q, T_k): with equal lengths T_k would seem to copy the
    input's axis 1 (T_q), a target that is wrong whenever T_q != T_k."""
    target, constants = _shape_of("s", "target", [2], [])
    nodes = [
        N("Transpose", ["k"], ["kt"], perm=[0, 2, 1]),
        N("MatMul", ["q", "kt"], ["s"]),
        *target[:2],
        N("Concat", ["minus_one", "target_lead"], ["target"], axis=0),
        N("Reshape", ["s", "target"], ["y"]),
    ]
    constants["minus_one"] = np.array([-1], np.int64)
    model = _model(nodes, {"q": ["batch", "tq", 4], "k": ["batch", "tk", 4]}, constants)
    feeds, _ = shapes.probe_feeds(model, None, None)
    assert {feed["q"].shape[1] != feed["k"].shape[1] for feed in feeds} == {True}
    feed = {
        "q": RNG.normal(size=(2, 3, 4)).astype(np.float32),
        "k": RNG.normal(size=(2, 5, 4)).astype(np.float32),
    }
    _same_after(shapes.freeze_reshapes, model, feed)  # whatever it does, the outputs stay those of the graph
    assert shapes.freeze_reshapes(model, None, None) == 0


def test_the_free_time_transformer_has_no_shape_arithmetic_left(tmp_path):
    """tests/fixtures/edge/k3-layernorm.keras (token ids with a free time axis): no Shape, Gather, Concat,
    ReduceProd or Cast left to compute a shape on every call, every Reshape target a constant."""
    from pathlib import Path

    from edgeattn.convert.export import export

    out = tmp_path / "k3.onnx"
    result = export(Path(__file__).parent / "fixtures" / "edge" / "k3-layernorm.keras", out)
    assert result.parity.passed
    model = onnx.load(out)
    ops = _ops(model)
    assert not {"Shape", "ConstantOfShape", "ReduceProd", "Concat", "Cast", "Squeeze", "Unsqueeze"} & set(ops)
    assert ops.count("Gather") == 1  # the embedding, reading the token ids directly
    constants = {t.name for t in model.graph.initializer}
    assert all(n.input[1] in constants for n in model.graph.node if n.op_type == "Reshape")
    assert ops.count("LayerNormalization") == 8  # all but rms_scaling=True, which is not a LayerNorm


def test_rows_stay_unflattened_through_axes_moved_past_them():
    """Between the flattening and the restoring Reshape: an Unsqueeze, a mean and a softmax over other axes,
    a Squeeze; their axes count from the rows, which become two."""
    target, constants = _shape_of("x", "target", [0, 1], [3, 2])
    nodes = [
        N("Reshape", ["x", "flat"], ["rows"]),  # (batch * time, 6)
        N("Unsqueeze", ["rows", "axis1"], ["u"]),  # (batch * time, 1, 6)
        N("ReduceMean", ["u", "axis2"], ["m"], keepdims=1),
        N("Sub", ["u", "m"], ["c"]),
        N("Softmax", ["c"], ["p"], axis=2),
        N("Squeeze", ["p", "axis1"], ["s"]),
        *target,
        N("Reshape", ["s", "target"], ["y"]),  # (batch, time, 3, 2)
    ]
    constants.update(
        flat=np.array([-1, 6], np.int64), axis1=np.array([1], np.int64), axis2=np.array([-1], np.int64)
    )
    model = _model(nodes, {"x": ["batch", "time", 6]}, constants, opset=18)
    x = RNG.normal(size=(5, 7, 6)).astype(np.float32)
    assert _same_after(rows.unflatten_rows, model, {"x": x}, atol=1e-6) == 1
    assert _ops(model) == ["Unsqueeze", "ReduceMean", "Sub", "Softmax", "Squeeze", "Reshape"]
    assert graph.attr(model.graph.node[3], "axis") == 3
