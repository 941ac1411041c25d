"""Keras layers exported as the fewest kernels (edgeattn.convert.standins, issue 26): MultiHeadAttention, Conv1D(1).

The references are Keras' own outputs (of the original layer, or the fixture's saved outputs, taken before the
model was saved), never edgeattn's.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import ROOT

from edgeattn.convert import standins
from edgeattn.convert.export import export

EDGE = ROOT / "tests" / "fixtures" / "edge"


def _ops(path) -> Counter:
    return Counter(n.op_type for n in onnx.load(path).graph.node)


def _run(path, feed: dict) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, feed)


def _attention_model(cross: bool = False, causal: bool = False, heads: int = 2, size: int = 4):
    import keras

    keras.utils.set_random_seed(3)
    x = keras.Input((6, 8), name="x")
    inputs = [x]
    value = x
    if cross:
        value = keras.Input((9, 5), name="memory")
        inputs.append(value)
    layer = keras.layers.MultiHeadAttention(heads, size, name="mha")
    y = layer(x, value, use_causal_mask=causal)
    model = keras.Model(inputs, keras.layers.Dense(1, name="head")(keras.layers.Flatten()(y)))
    for w in layer.weights:  # biases too, so that folding the scale into the query bias is exercised
        w.assign(np.random.default_rng(len(w.name)).normal(0, 0.5, w.shape).astype("float32"))
    return model


def _feed(model, rng) -> dict:
    return {t.name: rng.normal(size=(3, *t.shape[1:])).astype(np.float32) for t in model.inputs}


@pytest.mark.parametrize("cross", [False, True], ids=["self", "cross"])
def test_attention_is_one_projection_product_and_computes_what_keras_computes(tmp_path, cross):
    model = _attention_model(cross=cross)
    src, out = tmp_path / "m.keras", tmp_path / "m.onnx"
    model.save(src)
    export(src, out)
    ops = _ops(out)
    # self-attention: one MatMul for q, k and v; cross: one for q and one for k and v. Then two products for
    # the scores and the mix, the output projection, the head (flattened: a MatMul). The scale is folded: no Mul, no Div.
    assert ops["MatMul"] == (6 if cross else 5), ops
    assert ops["Split"] == 1 and ops["Softmax"] == 1 and ops["Mul"] == 0 and ops["Div"] == 0, ops
    assert ops["Unsqueeze"] == ops["Squeeze"] == 0, ops
    feed = _feed(model, np.random.default_rng(1))
    want = np.asarray(model(list(feed.values()) if cross else feed["x"]))
    (got,) = _run(out, feed)
    assert np.abs(got - want).max() < 1e-5


def test_a_masked_attention_keeps_the_original_conversion(tmp_path):
    model = _attention_model(causal=True)
    src, out = tmp_path / "m.keras", tmp_path / "m.onnx"
    model.save(src)
    export(src, out)
    assert _ops(out)["Split"] == 0  # the stand-in called the original layer: what tf2onnx made of it
    feed = _feed(model, np.random.default_rng(2))
    (got,) = _run(out, feed)
    assert np.abs(got - np.asarray(model(feed["x"]))).max() < 1e-5


def test_a_stand_in_that_moves_the_outputs_is_not_used(monkeypatch):
    layer = _attention_model().get_layer("mha")
    assert standins.stand_in(layer) is not layer
    real = standins._weights
    monkeypatch.setattr(standins, "_weights", lambda dense, h, s, scale=1.0: real(dense, h, s, scale * 1.001))
    assert standins.stand_in(layer) is layer


def test_a_subclass_of_multi_head_attention_is_left_alone():
    import keras

    class Mine(keras.layers.MultiHeadAttention):
        pass

    layer = Mine(2, 4)
    layer(np.zeros((1, 3, 8), np.float32), np.zeros((1, 3, 8), np.float32))
    assert standins.stand_in(layer) is layer


def test_a_pointwise_conv1d_is_one_product_and_a_wider_kernel_stays_a_convolution(tmp_path):
    import keras

    keras.utils.set_random_seed(4)
    x = keras.Input((10, 3), name="x")
    y = keras.layers.Conv1D(5, 1, activation="relu", name="pointwise")(x)
    y = keras.layers.Conv1D(2, 3, padding="same", name="wide")(y)
    model = keras.Model(x, y)
    src, out = tmp_path / "c.keras", tmp_path / "c.onnx"
    model.save(src)
    export(src, out)
    ops = _ops(out)
    assert ops["Conv"] == 1 and ops["MatMul"] == 1 and ops["Relu"] == 1, ops
    feed = np.random.default_rng(5).normal(size=(4, 10, 3)).astype(np.float32)
    (got,) = _run(out, {"x": feed})
    assert np.abs(got - np.asarray(model(feed))).max() < 1e-5


@pytest.mark.parametrize("name, blocks", [("ts-block1", 1), ("mha-conv4", 4), ("k3-layernorm", 4)])
def test_edge_fixtures_export_and_match_the_saved_keras_outputs(tmp_path, name, blocks):
    out = tmp_path / f"{name}.onnx"
    export(EDGE / f"{name}.keras", out)
    ref = np.load(EDGE / f"{name}.npz")  # Keras' own outputs, taken before the model was saved
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: ref["x"]})
    assert np.abs(got - ref["y"]).max() < 1e-5
    ops = _ops(out)
    assert ops["Split"] == blocks, ops  # one projection product (and split) per attention
