"""Keras 3 layers of edgeattn: many-to-one ``Attention`` and ``NadarayaWatson`` kernel regression.

``Attention`` is a drop-in for the ``Attention`` layer of the ``attention`` package on PyPI (versions 4.1 and
5.0.0): same constructor, same arithmetic, same sub-layer names, so weights trained with that package load
into it. It is written with ``keras.ops.matmul`` and the Luong score rewritten as ``h_s . (W h_t)`` (one
matrix-vector product instead of one per time step), which exports to a small ONNX graph.

Both layers are registered with Keras under the package name ``edgeattn`` so that ``.keras`` files that use
them load without ``custom_objects``.
"""

from __future__ import annotations

import keras
from keras import layers, ops

from edgeattn.convert import tfops
from edgeattn.convert.legacy import TENSOR_SLOT

SCORES = ("luong", "bahdanau")


@keras.saving.register_keras_serializable(package="edgeattn")
class Attention(layers.Layer):
    """Many-to-one attention over the hidden states of a recurrent layer.

    For hidden states ``h`` of shape (batch, time, d) and the last state ``h_t = h[:, -1, :]``:

    - ``score="luong"``: ``score_s = h_t . (W h_s)`` (W: ``luong_w``, d x d, no bias);
    - ``score="bahdanau"``: ``score_s = v . tanh(W1 h_t + W2 h_s)`` (``bahdanau_w1``, ``bahdanau_w2``,
      ``bahdanau_v``);

    ``weights = softmax(score over time)``, ``context = sum_s weights_s h_s`` and the output is
    ``tanh([context, h_t] Wc)`` with ``Wc`` = ``attention_vector`` (2d x units, no bias).

    Call with ``return_attention_scores=True`` to get ``(output, weights)``, weights of shape (batch, time).
    """

    def __init__(self, units: int = 128, score: str = "luong", **kwargs):
        super().__init__(**kwargs)
        if score not in SCORES:
            raise ValueError(f"score must be one of {SCORES}, got {score!r}")
        if int(units) < 1:
            raise ValueError(f"units must be a positive integer, got {units!r}")
        self.units = int(units)
        self.score = score

    def build(self, input_shape):
        if len(input_shape) != 3:
            raise ValueError(
                f"Attention expects hidden states of shape (batch, time, features), got {tuple(input_shape)}"
            )
        d = int(input_shape[-1])
        if self.score == "luong":
            self.luong_w = layers.Dense(d, use_bias=False, name="luong_w")
            self.luong_w.build((None, d))
        else:
            self.bahdanau_v = layers.Dense(1, use_bias=False, name="bahdanau_v")
            self.bahdanau_w1 = layers.Dense(d, use_bias=False, name="bahdanau_w1")
            self.bahdanau_w2 = layers.Dense(d, use_bias=False, name="bahdanau_w2")
            self.bahdanau_w1.build((None, d))
            self.bahdanau_w2.build((None, d))
            self.bahdanau_v.build((None, d))
        self.attention_vector = layers.Dense(
            self.units, use_bias=False, activation="tanh", name="attention_vector"
        )
        self.attention_vector.build((None, 2 * d))

    def call(self, inputs, training=None, return_attention_scores=False):
        h_s = inputs
        h_t = h_s[:, -1, :]
        if self.score == "luong":
            # h_t . (h_s W) == h_s . (W h_t): one (d x d) product per sample instead of one per step.
            query = ops.matmul(h_t, ops.transpose(self.luong_w.kernel))
            score = ops.squeeze(ops.matmul(h_s, ops.expand_dims(query, -1)), -1)
        else:
            a1 = ops.expand_dims(ops.matmul(h_t, self.bahdanau_w1.kernel), 1)
            a2 = ops.matmul(h_s, self.bahdanau_w2.kernel)
            score = ops.squeeze(ops.matmul(ops.tanh(a1 + a2), self.bahdanau_v.kernel), -1)
        weights = ops.softmax(score, axis=-1)
        context = ops.squeeze(ops.matmul(ops.expand_dims(weights, 1), h_s), 1)
        output = self.attention_vector(ops.concatenate([context, h_t], axis=-1))
        if return_attention_scores:
            return output, weights
        return output

    def get_config(self):
        config = super().get_config()
        config.update({"units": self.units, "score": self.score})
        return config


@keras.saving.register_keras_serializable(package="edgeattn")
class NadarayaWatson(layers.Layer):
    """Nadaraya-Watson kernel regression as an attention layer.

    Called on ``[queries, keys, values]`` with queries (batch, n_queries) and keys, values (batch, n_keys):
    ``weights = softmax over keys of -((q - k) * w)^2 / 2`` with a learnable bandwidth ``w`` (initialised to
    ``bandwidth``), and ``output = weights @ values`` of shape (batch, n_queries). With ``w = 1`` this is the
    Gaussian kernel ``softmax(-(q - k)^2 / 2)`` of the seed's example.
    """

    def __init__(self, bandwidth: float = 1.0, trainable: bool = True, **kwargs):
        super().__init__(trainable=trainable, **kwargs)
        self.bandwidth = float(bandwidth)

    def build(self, input_shape):
        self.w = self.add_weight(
            name="w",
            shape=(1,),
            initializer=keras.initializers.Constant(self.bandwidth),
            trainable=self.trainable,
        )

    def call(self, inputs, return_attention_scores=False):
        queries, keys, values = inputs
        diff = (ops.expand_dims(queries, -1) - ops.expand_dims(keys, 1)) * self.w
        weights = ops.softmax(-0.5 * ops.square(diff), axis=-1)
        output = ops.squeeze(ops.matmul(weights, ops.expand_dims(values, -1)), -1)
        if return_attention_scores:
            return output, weights
        return output

    def get_config(self):
        config = super().get_config()
        config.update({"bandwidth": self.bandwidth})
        return config


@keras.saving.register_keras_serializable(package="edgeattn", name="hard_sigmoid_keras2")
def hard_sigmoid_keras2(x):
    """Keras 2's hard sigmoid, ``clip(0.2 x + 0.5, 0, 1)``. Keras 3's ``hard_sigmoid`` is
    ``clip(x / 6 + 0.5, 0, 1)``, so Keras 2 files that name ``hard_sigmoid`` load with this one instead."""
    return ops.clip(0.2 * x + 0.5, 0.0, 1.0)


@keras.saving.register_keras_serializable(package="edgeattn", name="gelu_erf")
def gelu_erf(x):
    """Keras' exact GELU written with ``Erf`` (ONNX has it); TensorFlow's own uses ``Erfc``, which tf2onnx
    cannot convert. Used in place of ``gelu`` while converting; the parity check compares it with Keras'."""
    return tfops.gelu(ops, x)


@keras.saving.register_keras_serializable(package="edgeattn")
class TFOp(layers.Layer):
    """A TensorFlow function that a Keras 2 file recorded by name (``TFOpLambda``, ``SlicingOpLambda``),
    rebuilt with ``keras.ops`` from edgeattn's allowlist (``edgeattn.convert.tfops``): data, never code.

    ``arguments`` is the call's template, ``{"args": [...], "kwargs": {...}}``, in which
    ``{"__edgeattn_input__": i}`` stands for the i-th tensor of the layer's input list.
    """

    def __init__(self, function: str, arguments: dict | None = None, **kwargs):
        super().__init__(**kwargs)
        if not tfops.known(function):
            raise ValueError(f"tf.{function} is not in edgeattn's list of pure tensor functions")
        self.function = function
        self.arguments = arguments or {"args": [], "kwargs": {}}

    def call(self, inputs):
        tensors = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]

        def fill(value):
            if isinstance(value, dict) and set(value) == {TENSOR_SLOT}:
                return tensors[value[TENSOR_SLOT]]
            if isinstance(value, dict):
                return {k: fill(v) for k, v in value.items()}
            if isinstance(value, list):
                return [fill(v) for v in value]
            return value

        return tfops.apply(ops, self.function, fill(self.arguments["args"]), fill(self.arguments["kwargs"]))

    def get_config(self):
        config = super().get_config()
        config.update({"function": self.function, "arguments": self.arguments})
        return config


ATTENTION_LAYERS = (Attention, NadarayaWatson)


def attention_layers(model: keras.Model) -> list:
    """The top-level layers of ``model`` whose attention weights can be an output: edgeattn's, and Keras'
    ``Attention``, ``AdditiveAttention`` and ``MultiHeadAttention`` (all answer ``return_attention_scores``)."""
    kinds = (*ATTENTION_LAYERS, layers.Attention, layers.AdditiveAttention, layers.MultiHeadAttention)
    return [layer for layer in model.layers if isinstance(layer, kinds)]


def with_attention_output(model: keras.Model, layer_name: str | None = None) -> keras.Model:
    """The same model (same layer objects, same weights) with one attention layer's weights as a last output.

    ``layer_name`` picks the layer when the model has several (see ``attention_layers``). Sequential models
    are traced layer by layer; functional models are re-traced with that layer asked for its scores.
    """
    candidates = attention_layers(model)
    names = ", ".join(f"{c.name!r} ({type(c).__name__})" for c in candidates) or "none"
    if layer_name is not None:
        chosen = [c for c in candidates if c.name == layer_name]
        if not chosen:
            raise ValueError(
                f"--attention-weights {layer_name!r}: no such attention layer; the model has: {names}"
            )
    elif len(candidates) == 1:
        chosen = candidates
    elif not candidates:
        raise ValueError(
            "--attention-weights needs an attention layer at the top level of the model (edgeattn's Attention or "
            "NadarayaWatson, Keras' Attention, AdditiveAttention or MultiHeadAttention); found none"
        )
    else:
        raise ValueError(
            f"the model has {len(candidates)} attention layers: {names}; name one with --attention-weights=LAYER"
        )
    target = chosen[0]
    captured = []
    originals = {}

    def clone(layer):
        # Keras cannot re-trace a layer with a different number of outputs than its first call gave, so the
        # attention layer is replaced by a fresh copy whose first call asks for the scores; same weights.
        if layer is target:
            fresh = layer.__class__.from_config(layer.get_config())
            originals[id(fresh)] = layer
            return fresh
        return layer

    def call(layer, *args, **kwargs):
        if id(layer) in originals:
            output, weights = layer(*args, return_attention_scores=True, **kwargs)
            layer.set_weights(originals[id(layer)].get_weights())
            captured.append(weights)
            return output
        return layer(*args, **kwargs)

    if isinstance(model, keras.Sequential):
        inputs = keras.Input(batch_shape=model.inputs[0].shape, dtype=model.inputs[0].dtype, name="x")
        x = inputs
        for layer in model.layers:
            x = call(clone(layer), x)
        outputs = [x]
    else:
        copy = keras.models.clone_model(model, clone_function=clone, call_function=call)
        inputs, outputs = copy.inputs, list(copy.outputs)
    inputs = inputs[0] if isinstance(inputs, (list, tuple)) and len(inputs) == 1 else inputs
    return keras.Model(inputs, [*outputs, captured[-1]], name=f"{model.name}_with_attention")
