"""Keras' Conv1D as one 1-D ONNX Conv with its bias (edgeattn.graphs.convs, issue 26). The reference is Keras."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from edgeattn.convert.export import export
from edgeattn.graphs import convs


def _model(**conv):
    import keras

    keras.utils.set_random_seed(6)
    x = keras.Input((20, 3), name="x")
    layer = keras.layers.Conv1D(4, 3, activation="relu", name="conv", **conv)
    model = keras.Model(x, keras.layers.Dense(2, name="head")(keras.layers.Flatten()(layer(x))))
    if layer.bias is not None:  # a bias of zeros would be folded away before the rewrite sees it
        layer.bias.assign(np.linspace(-0.5, 0.5, 4).astype("float32"))
    return model


@pytest.mark.parametrize(
    "conv",
    [{}, {"padding": "same", "strides": 2}, {"padding": "causal", "dilation_rate": 2}, {"use_bias": False}],
    ids=["valid", "same-strided", "causal-dilated", "no-bias"],
)
def test_a_conv1d_is_one_convolution_over_one_axis(tmp_path, conv):
    model = _model(**conv)
    src, out = tmp_path / "c.keras", tmp_path / "c.onnx"
    model.save(src)
    export(src, out)
    proto = onnx.load(out)
    ops = Counter(n.op_type for n in proto.graph.node)
    (node,) = [n for n in proto.graph.node if n.op_type == "Conv"]
    weight = next(t for t in proto.graph.initializer if t.name == node.input[1])
    assert len(weight.dims) == 3 and ops["Unsqueeze"] == ops["Squeeze"] == 0, ops
    assert len(node.input) == (2 if conv.get("use_bias") is False else 3)  # the bias inside the Conv
    x = np.random.default_rng(7).normal(size=(5, 20, 3)).astype(np.float32)
    (got,) = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    assert np.abs(got - np.asarray(model(x))).max() < 1e-5


def test_a_rewrite_that_moves_the_outputs_is_not_used(tmp_path, monkeypatch):
    model = _model()
    src, out = tmp_path / "c.keras", tmp_path / "c.onnx"
    model.save(src)
    monkeypatch.setattr(convs, "TOLERANCE", -1.0)  # no graph agrees within a negative tolerance
    export(src, out)
    assert Counter(n.op_type for n in onnx.load(out).graph.node)["Unsqueeze"] == 1
