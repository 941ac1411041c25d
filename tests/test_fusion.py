"""Standard ops in place of tf2onnx's node chains (edgeattn.graphs.fusion), on graphs built here in tf2onnx's form."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeattn.graphs import fusion

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


# -- LayerNormalization in the other forms Keras 2, Keras 3 and hand-written layers compute it in ---------

N = helper.make_node
EPS = 1e-3
X_VALUE = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4, 8])


def _graph_model(nodes, constants: dict, opset: int = 17, x=X_VALUE) -> onnx.ModelProto:
    g = helper.make_graph(
        nodes,
        "chain",
        [x],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [
            numpy_helper.from_array(np.asarray(v, np.float32 if k != "axes" else np.int64), k)
            for k, v in constants.items()
        ],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def _outputs(model, x):
    return ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]


def _fuses_to_one(fuse, model, op: str, shape=(3, 4, 8)):
    """``fuse`` rewrites ``model`` into the one node ``op``, with the original's outputs on a fresh input."""
    x = RNG.normal(0, 3, shape).astype(np.float32)
    want = _outputs(model, x)
    before = len(model.graph.node)
    assert fuse(model, _feeds()) == 1
    assert [n.op_type for n in model.graph.node] == [op] and before > 1
    assert {n.domain for n in model.graph.node} == {""}
    np.testing.assert_allclose(_outputs(model, x), want, atol=1e-5)
    return model.graph.node[0]


KERAS3_BARE = [  # keras.ops.layer_normalization with scale=False, center=False (mha-conv4's second norms)
    N("GlobalAveragePool", ["x"], ["mean"]),
    N("Neg", ["mean"], ["nm"]),
    N("Sub", ["x", "mean"], ["d"]),
    N("Mul", ["d", "d"], ["d2"]),
    N("GlobalAveragePool", ["d2"], ["var"]),
    N("Add", ["var", "eps"], ["ve"]),
    N("Sqrt", ["ve"], ["sd"]),
    N("Reciprocal", ["sd"], ["r"]),
    N("Mul", ["nm", "r"], ["shift"]),
    N("Mul", ["x", "r"], ["xr"]),
    N("Add", ["xr", "shift"], ["y"]),
]
CENTERED_POW = [  # ReduceMean, Pow(-0.5), center only, the operands the other way round
    N("ReduceMean", ["x"], ["mean"], axes=[-1]),
    N("Sub", ["x", "mean"], ["d"]),
    N("Pow", ["d", "two"], ["d2"]),
    N("ReduceMean", ["d2"], ["var"], axes=[2]),
    N("Add", ["eps", "var"], ["ve"]),
    N("Pow", ["ve", "minus_half"], ["r"]),
    N("Mul", ["r", "d"], ["n"]),
    N("Add", ["beta", "n"], ["y"]),
]
DIVIDED = [  # (x - mean) / sqrt(var + eps) * gamma + beta, as hand-written layers compute it
    N("ReduceMean", ["x"], ["mean"], axes=[-1]),
    N("Sub", ["x", "mean"], ["d"]),
    N("Mul", ["d", "d"], ["d2"]),
    N("ReduceMean", ["d2"], ["var"], axes=[-1]),
    N("Add", ["var", "eps"], ["ve"]),
    N("Sqrt", ["ve"], ["sd"]),
    N("Div", ["d", "sd"], ["n"]),
    N("Mul", ["gamma", "n"], ["s"]),
    N("Add", ["s", "beta"], ["y"]),
]
SQUARES = [  # variance as mean(x^2) - mean^2, 1 / sqrt by Div
    N("ReduceMean", ["x"], ["mean"], axes=[-1]),
    N("Mul", ["x", "x"], ["x2"]),
    N("ReduceMean", ["x2"], ["meansq"], axes=[-1]),
    N("Mul", ["mean", "mean"], ["m2"]),
    N("Sub", ["meansq", "m2"], ["var"]),
    N("Add", ["var", "eps"], ["ve"]),
    N("Sqrt", ["ve"], ["sd"]),
    N("Div", ["one", "sd"], ["r"]),
    N("Mul", ["r", "gamma"], ["rg"]),
    N("Sub", ["x", "mean"], ["d"]),
    N("Mul", ["d", "rg"], ["y"]),
]
LN_CONSTANTS = {
    "eps": np.array(EPS),
    "two": np.array(2.0),
    "minus_half": np.array(-0.5),
    "one": np.array(1.0),
    "gamma": GAMMA.reshape(1, 1, 8),
    "beta": BETA,
}


@pytest.mark.parametrize(
    ("nodes", "scale", "bias"),
    [(KERAS3_BARE, 1.0, 0.0), (CENTERED_POW, 1.0, BETA), (DIVIDED, GAMMA, BETA), (SQUARES, GAMMA, 0.0)],
    ids=["keras 3 without scale and center", "pow and center only", "divided", "mean of squares"],
)
def test_every_exact_form_of_layer_normalization_becomes_one_node(nodes, scale, bias):
    model = _graph_model(nodes, {k: v for k, v in LN_CONSTANTS.items() if any(k in n.input for n in nodes)})
    ln = _fuses_to_one(fusion.fuse_layer_norms, model, "LayerNormalization")
    assert helper.get_attribute_value(
        ln.attribute[1 if ln.attribute[0].name == "axis" else 0]
    ) == pytest.approx(EPS)
    constants = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    np.testing.assert_allclose(constants[ln.input[1]], np.broadcast_to(scale, 8), rtol=1e-6)
    np.testing.assert_allclose(constants[ln.input[2]], np.broadcast_to(bias, 8), rtol=1e-6)


def test_layer_normalization_with_reduce_mean_axes_as_an_input_at_opset_18():
    nodes = [N(n.op_type, [*n.input, "axes"], n.output) if n.op_type == "ReduceMean" else n for n in DIVIDED]
    model = _graph_model(
        nodes, {**{k: LN_CONSTANTS[k] for k in ("eps", "gamma", "beta")}, "axes": [-1]}, opset=18
    )
    _fuses_to_one(fusion.fuse_layer_norms, model, "LayerNormalization")


NOT_LAYER_NORMS = {
    "epsilon outside the root": [  # (x - mean) / (sqrt(var) + eps)
        N("ReduceMean", ["x"], ["mean"], axes=[-1]),
        N("Sub", ["x", "mean"], ["d"]),
        N("Mul", ["d", "d"], ["d2"]),
        N("ReduceMean", ["d2"], ["var"], axes=[-1]),
        N("Sqrt", ["var"], ["sd"]),
        N("Add", ["sd", "eps"], ["se"]),
        N("Div", ["d", "se"], ["y"]),
    ],
    "rms_scaling": [  # Keras' LayerNormalization(rms_scaling=True): x * rsqrt(var + eps) * gamma
        N("GlobalAveragePool", ["x"], ["mean"]),
        N("Sub", ["x", "mean"], ["d"]),
        N("Mul", ["d", "d"], ["d2"]),
        N("GlobalAveragePool", ["d2"], ["var"]),
        N("Add", ["var", "eps"], ["ve"]),
        N("Sqrt", ["ve"], ["sd"]),
        N("Reciprocal", ["sd"], ["r"]),
        N("Mul", ["gamma", "r"], ["rg"]),
        N("Mul", ["x", "rg"], ["y"]),
    ],
    "centred over the root mean square": [  # (x - mean) / sqrt(mean(x^2) + eps): the variance not taken
        N("ReduceMean", ["x"], ["mean"], axes=[-1]),
        N("Sub", ["x", "mean"], ["d"]),
        N("Mul", ["x", "x"], ["x2"]),
        N("ReduceMean", ["x2"], ["ms"], axes=[-1]),
        N("Add", ["ms", "eps"], ["me"]),
        N("Sqrt", ["me"], ["rms"]),
        N("Div", ["d", "rms"], ["y"]),
    ],
    "rms norm": [  # x / sqrt(mean(x^2) + eps) * gamma
        N("Mul", ["x", "x"], ["x2"]),
        N("GlobalAveragePool", ["x2"], ["ms"]),
        N("Add", ["ms", "eps"], ["me"]),
        N("Sqrt", ["me"], ["rms"]),
        N("Div", ["x", "rms"], ["n"]),
        N("Mul", ["n", "gamma"], ["y"]),
    ],
}


@pytest.mark.parametrize("name", sorted(NOT_LAYER_NORMS))
def test_what_is_not_exactly_layer_normalization_is_left_as_it_is(name, monkeypatch):
    monkeypatch.setattr(fusion, "TOLERANCE", float("inf"))  # the match alone refuses, before any check
    nodes = NOT_LAYER_NORMS[name]
    model = _graph_model(nodes, {k: v for k, v in LN_CONSTANTS.items() if any(k in n.input for n in nodes)})
    assert fusion.fuse_layer_norms(model, _feeds()) == 0
    assert [n.op_type for n in model.graph.node] == [n.op_type for n in nodes]


def test_a_scale_that_varies_along_another_axis_stays_outside_the_node():
    nodes = [*DIVIDED[:7], N("Mul", ["n", "w"], ["y"])]  # w: one scale per time step, not per channel
    model = _graph_model(nodes, {"eps": np.array(EPS), "w": RNG.random((1, 4, 1)) + 0.5})
    x = RNG.normal(0, 3, (3, 4, 8)).astype(np.float32)
    want = _outputs(model, x)
    assert fusion.fuse_layer_norms(model, _feeds()) == 1
    assert [n.op_type for n in model.graph.node] == ["LayerNormalization", "Mul"]
    np.testing.assert_allclose(_outputs(model, x), want, atol=1e-5)


def test_a_chain_whose_intermediate_is_read_elsewhere_is_not_fused():
    nodes = [*DIVIDED, N("Add", ["y", "var"], ["y2"])]  # the variance is also read after the norm
    model = _graph_model(nodes, {k: LN_CONSTANTS[k] for k in ("eps", "gamma", "beta")})
    model.graph.output[0].name = "y2"
    assert fusion.fuse_layer_norms(model, _feeds()) == 0
    assert len(model.graph.node) == len(nodes)


# -- GELU --------------------------------------------------------------------------------------------------

GELUS = {
    "erf, as Keras writes it": [
        N("Mul", ["half", "x"], ["a"]),
        N("Mul", ["x", "inv_sqrt2"], ["b"]),
        N("Erf", ["b"], ["e"]),
        N("Add", ["one", "e"], ["c"]),
        N("Mul", ["a", "c"], ["y"]),
    ],
    "erf, other order": [
        N("Div", ["x", "sqrt2"], ["b"]),
        N("Erf", ["b"], ["e"]),
        N("Add", ["e", "one"], ["c"]),
        N("Mul", ["x", "c"], ["a"]),
        N("Mul", ["a", "half"], ["y"]),
    ],
    "tanh": [  # 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
        N("Mul", ["x", "x"], ["x2"]),
        N("Mul", ["x2", "x"], ["x3"]),
        N("Mul", ["cubic", "x3"], ["k"]),
        N("Add", ["x", "k"], ["s"]),
        N("Mul", ["s", "root"], ["t0"]),
        N("Tanh", ["t0"], ["t"]),
        N("Add", ["t", "one"], ["c"]),
        N("Mul", ["half", "x"], ["a"]),
        N("Mul", ["a", "c"], ["y"]),
    ],
}
GELU_CONSTANTS = {
    "half": np.array(0.5),
    "one": np.array([[[1.0]]]),
    "inv_sqrt2": np.array(0.7071067690849304),
    "sqrt2": np.array(2**0.5),
    "cubic": np.array(0.044715),
    "root": np.array((2 / np.pi) ** 0.5),
}


def _gelu_model(name: str, opset: int = 20, **changed) -> onnx.ModelProto:
    nodes = GELUS[name]
    constants = {**GELU_CONSTANTS, **changed}
    return _graph_model(
        nodes, {k: v for k, v in constants.items() if any(k in n.input for n in nodes)}, opset
    )


@pytest.mark.parametrize("name", sorted(GELUS))
def test_gelu_chains_become_one_gelu_node_at_opset_20(name):
    gelu = _fuses_to_one(fusion.fuse_gelus, _gelu_model(name), "Gelu")
    assert helper.get_attribute_value(gelu.attribute[0]) == (b"tanh" if name == "tanh" else b"none")


def test_no_gelu_below_opset_20_or_with_another_constant_or_when_the_outputs_move(monkeypatch):
    assert fusion.fuse_gelus(_gelu_model("erf, as Keras writes it", opset=18), _feeds()) == 0
    model = _gelu_model("erf, as Keras writes it", inv_sqrt2=np.array(0.8))  # not GELU's argument
    assert fusion.fuse_gelus(model, _feeds()) == 0 and len(model.graph.node) == 5
    model = _gelu_model("tanh", cubic=np.array(0.05))
    assert fusion.fuse_gelus(model, _feeds()) == 0 and len(model.graph.node) == 9
    monkeypatch.setattr(fusion, "TOLERANCE", -1.0)
    model = _gelu_model("erf, other order")
    assert fusion.fuse_gelus(model, _feeds()) == 0 and len(model.graph.node) == 5


def test_the_keras3_conv_transformer_exports_every_layer_norm_as_one_node(tmp_path):
    """tests/fixtures/edge/mha-conv4.keras: 8 LayerNormalizations, half of them without scale and center (the
    GlobalAveragePool/Sub/Mul/Sqrt/Reciprocal/Neg chains the moments matcher left)."""
    from edgeattn.convert.export import export

    out = tmp_path / "m.onnx"
    result = export(Path(__file__).parent / "fixtures" / "edge" / "mha-conv4.keras", out)
    assert result.parity.passed
    ops = [n.op_type for n in onnx.load(out).graph.node]
    assert ops.count("LayerNormalization") == 8
    assert not {"Sqrt", "Reciprocal", "Neg", "Sub"} & set(ops)
    assert ops.count("GlobalAveragePool") == 1  # the pooling at the end, not a norm's mean


def test_export_at_opset_20_writes_each_gelu_as_one_node(tmp_path):
    """tf2onnx writes opset 18 at most: the export upgrades with onnx's version converter, then fuses. The
    reference is the Keras model's own saved outputs (tests/fixtures/edge/k3-layernorm.npz)."""
    from edgeattn.convert.export import ExportOptions, export

    edge = Path(__file__).parent / "fixtures" / "edge"
    out = tmp_path / "k3.onnx"
    export(edge / "k3-layernorm.keras", out, ExportOptions(opset=20))
    model = onnx.load(out)
    ops = [n.op_type for n in model.graph.node]
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) == 20
    assert ops.count("Gelu") == 4 and "Erf" not in ops
    ref = np.load(edge / "k3-layernorm.npz")
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"tokens": ref["x"]})
    assert np.abs(got - ref["y"]).max() < 1e-5
