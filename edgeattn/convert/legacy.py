"""Keras 2 model configs and weights, made fit for Keras 3. Pure data: nothing here imports Keras.

What Keras 3 cannot read in a Keras 2 ``.h5`` config, rewritten in a copy:
- keys Keras 3 refuses are dropped where they carry no meaning: ``implementation`` (a kernel choice) and
  ``time_major=False`` from Keras' own recurrent layers and cells only (a user's layer keeps its own
  arguments of those names), MultiHeadAttention's build shapes; ``time_major=True`` is refused by layer name
  (Keras 3 reads only batch-major inputs, and dropping it would swap the batch and time axes);
- the ``build_config`` of a model's layers is dropped (tf.keras 2.13-2.15 ``.keras``: the graph builds them);
- an old ``Sequential`` (Keras 2.0-2.2: its config a bare list, no ``InputLayer``; the input given on the first
  layer as ``batch_input_shape``, ``batch_shape``, ``input_shape``, or Keras 1's ``input_dim``/``input_length``)
  gets the ``InputLayer`` that Keras 2 built from those keys (``input_shape_of``);
- a ``GRU`` without ``reset_after`` (Keras before 2.1.3) keeps what it computed (``reset_after=False``);
- ``hard_sigmoid`` stays Keras 2's (``hard_sigmoid_keras2``): Keras 3 redefined it;
- the ``attention`` package's ``Attention`` (``units``/``score``) becomes ``edgeattn>Attention``, so that
  ``Attention`` alone means Keras' own layer;
- ``CuDNNLSTM`` / ``CuDNNGRU`` become ``LSTM`` / ``GRU`` with what cuDNN computes (tanh, sigmoid gates, GRU
  ``reset_after=True``); their weights are converted by ``cudnn_weights`` as they are loaded;
- ``TFOpLambda`` / ``SlicingOpLambda`` keep the recorded TF function name; their tensors and constant
  arguments move into an argument template (see ``edgeattn.convert.layers.TFOp``);
- call arguments that hold other tensors (``MultiHeadAttention(query, value=..., key=...)``, ``y`` of a TF op)
  are written in Keras 3's node form, which resolves tensor references; Keras 3's reader of Keras 2 nodes
  passes them on as plain lists. Both node rewrites are ``edgeattn.convert.legacynodes``'.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edgeattn.convert.legacynodes import (  # noqa: F401 - CONSTANT, TENSOR_SLOT: the names callers have found here
    CONSTANT,
    TENSOR_SLOT,
    needs_keras3_form,
    node_entries,
    tf_op_layer,
    to_keras3_node,
)

# Keras 2 keys of the recurrent layers and cells that Keras 3 refuses (``time_major`` only when False).
LEGACY_KEYS = ("time_major", "implementation")
# Keras 2 activations whose Keras 3 namesakes compute something else.
ACTIVATION_KEYS = ("activation", "recurrent_activation")
LEGACY_ACTIVATIONS = {"hard_sigmoid": "hard_sigmoid_keras2"}
# Keys of one class that Keras 2 wrote and Keras 3 refuses (MultiHeadAttention's build shapes).
LEGACY_CLASS_KEYS = {"MultiHeadAttention": ("query_shape", "key_shape", "value_shape")}
CUDNN = {"CuDNNLSTM": "LSTM", "CuDNNGRU": "GRU"}
# Where Keras 1/2 took a Sequential model's input from its first layer.
INPUT_KEYS = ("batch_input_shape", "batch_shape", "input_shape", "input_dim", "input_length")
RECURRENT = frozenset({"LSTM", "GRU", "SimpleRNN", "CuDNNLSTM", "CuDNNGRU"})
RECURRENT_CLASSES = RECURRENT | {"RNN", "LSTMCell", "GRUCell", "SimpleRNNCell", "StackedRNNCells"}
WRAPPERS = frozenset({"Bidirectional", "TimeDistributed"})
TF_OP_LAYERS = ("TFOpLambda", "SlicingOpLambda")


@dataclass
class Rewritten:
    """A Keras 3-ready copy of a Keras 2 config, and the layers whose stored weights are cuDNN's."""

    config: dict
    cudnn: dict[str, list[str]] = field(default_factory=dict)  # layer name -> kind per stored direction
    package_attention: bool = True  # read "Attention" with units/score as the attention package's
    user_classes: frozenset[str] = frozenset()  # the user's own classes: their configs are theirs, untouched


def rewrite(config: dict, user_classes: frozenset[str] = frozenset()) -> Rewritten:
    """``user_classes``: names the user's own layer code supplies; a layer of such a class (also one named
    like a Keras class: ``Attention``, ``LSTM``) keeps its config as the file has it."""
    result = Rewritten(
        config={}, package_attention="Attention" not in user_classes, user_classes=user_classes
    )
    result.config = _rewrite(config, result, names=frozenset())
    return result


def is_package_attention(config) -> bool:
    """The ``attention`` package's layer (``units``, ``score``), as opposed to ``keras.layers.Attention``."""
    return isinstance(config, dict) and "units" in config and "score_mode" not in config


def _rewrite(node, result: Rewritten, names: frozenset):
    if isinstance(node, list):
        return [_rewrite(item, result, names) for item in node]
    if not isinstance(node, dict):
        return node
    cls = node.get("class_name")
    if isinstance(cls, str) and (
        isinstance(node.get("config"), dict) or (cls == "Sequential" and isinstance(node.get("config"), list))
    ):
        node = _rewrite_layer(node, result, names)
        layers = node["config"].get("layers")
        if isinstance(layers, list):  # a functional or sequential model: its layers name each other
            names = frozenset(
                layer.get("name") or layer.get("config", {}).get("name")
                for layer in layers
                if isinstance(layer, dict)
            )
    out = {}
    for key, value in node.items():
        if key in ACTIVATION_KEYS and isinstance(value, str):
            out[key] = LEGACY_ACTIVATIONS.get(value, value)
        elif key == "inbound_nodes" and isinstance(value, list):
            out[key] = [
                to_keras3_node(n, names) if isinstance(n, list) and needs_keras3_form(n, names) else n
                for n in value
            ]
        elif key == "layers" and isinstance(value, list):
            # a model's layers are built by the calls of its graph; tf.keras 2.13-2.15 also recorded each
            # one's build input, in a form Keras 3 cannot always take (MultiHeadAttention's lacks value_shape)
            out[key] = [
                _rewrite({k: v for k, v in layer.items() if k != "build_config"}, result, names)
                if isinstance(layer, dict)
                else _rewrite(layer, result, names)
                for layer in value
            ]
        else:
            out[key] = _rewrite(value, result, names)
    return out


def _rewrite_layer(node: dict, result: Rewritten, names: frozenset) -> dict:
    cls, config = node["class_name"], node["config"]
    if cls in result.user_classes or node.get("registered_name") in result.user_classes:
        return node  # the user's class wins over the Keras class of that name: no Keras 2 rewrite applies
    if cls == "Sequential":
        return _sequential(node)
    if cls in RECURRENT_CLASSES:
        if config.get("time_major"):
            raise ValueError(
                f"{cls} layer {config.get('name')!r} has time_major=True (inputs as (time, batch, features)), "
                "which Keras 3 cannot build; edgeattn refuses it rather than read the axes the other way round"
            )
        config = {k: v for k, v in config.items() if k not in LEGACY_KEYS}
        node = {**node, "config": config}
    if cls in RECURRENT and ("input_dim" in config or "input_length" in config):
        # Keras 1's way to give a recurrent layer's input shape; only a Sequential's first layer needs it
        # (``_sequential``), and Keras 3 refuses the keys
        config = {k: v for k, v in config.items() if k not in ("input_dim", "input_length")}
        node = {**node, "config": config}
    if cls in LEGACY_CLASS_KEYS:
        config = {k: v for k, v in config.items() if k not in LEGACY_CLASS_KEYS[cls]}
        node = {**node, "config": config}
    if cls == "Attention" and result.package_attention and is_package_attention(config):
        return {**node, "class_name": "edgeattn>Attention"}
    if cls == "BatchNormalization" and isinstance(config.get("axis"), list) and len(config["axis"]) == 1:
        # Keras 2 recorded its one axis as a list; Keras 3 takes an int
        node = {**node, "config": {**config, "axis": config["axis"][0]}}
        config = node["config"]
    if cls in ("Attention", "AdditiveAttention") and "causal" in config:
        # Keras 2.0-2.4 took causal= at construction; Keras 3 takes use_causal_mask= in the call
        node = _causal_as_call_argument(node)
        config = node["config"]
    if cls == "Attention" and config.get("score_mode") == "dot":
        # Keras 3's reader turns a config string that names a function into that function ('dot' ->
        # keras.layers.dot); "dot" is the default, so it is left out.
        return {**node, "config": {k: v for k, v in config.items() if k != "score_mode"}}
    if cls == "GRU" and "reset_after" not in config:
        # Keras before 2.1.3 had no reset_after and computed what reset_after=False computes; Keras 3's
        # default is True.
        return {**node, "config": {**config, "reset_after": False}}
    if cls in CUDNN:
        result.cudnn[config.get("name")] = [CUDNN[cls]]
        return _from_cudnn(node)
    if cls == "Bidirectional":
        inner = {k: config[k] for k in ("layer", "backward_layer") if isinstance(config.get(k), dict)}
        cudnn = {k: layer for k, layer in inner.items() if layer.get("class_name") in CUDNN}
        if cudnn:
            kinds = [CUDNN[layer["class_name"]] for layer in cudnn.values()]
            # one stored direction when the backward layer mirrors the forward one
            result.cudnn[config.get("name") or node.get("name")] = kinds * (2 if len(inner) == 1 else 1)
            node = {**node, "config": {**config, **{k: _from_cudnn(layer) for k, layer in cudnn.items()}}}
            return _wrapped_with_module(node)
    if cls in TF_OP_LAYERS and isinstance(node.get("inbound_nodes"), list):
        return tf_op_layer(node, names)
    if cls in WRAPPERS:
        return _wrapped_with_module(node)
    return node


def _causal_as_call_argument(node: dict) -> dict:
    """An attention layer built with Keras 2's ``causal=True`` as Keras 3 says it: ``use_causal_mask=True``
    in each of its calls (Keras 2 nodes keep call arguments in each entry's fourth element)."""
    causal = bool(node["config"].get("causal"))
    node = {**node, "config": {k: v for k, v in node["config"].items() if k != "causal"}}
    if not causal:
        return node
    calls = []
    for call in node.get("inbound_nodes") or []:
        if isinstance(call, list):
            # Keras 3 reads the call arguments of the last entry: each entry gets them
            call = [
                [*e[:3], {**(e[3] if len(e) == 4 else {}), "use_causal_mask": True}]
                for e in node_entries(call)
            ]
        elif isinstance(call, dict):  # Keras 3's node form
            call = {**call, "kwargs": {**call.get("kwargs", {}), "use_causal_mask": True}}
        calls.append(call)
    return {**node, "inbound_nodes": calls}


def _wrapped_with_module(node: dict) -> dict:
    """A wrapper whose inner layers name their module: Keras 3's ``Bidirectional``/``TimeDistributed`` read
    them with its new deserializer, which cannot find a bare class name (configs before Keras 2.13 and
    SavedModel metadata record none)."""
    config = dict(node["config"])
    for key in ("layer", "backward_layer"):
        inner = config.get(key)
        if isinstance(inner, dict) and "module" not in inner and ">" not in str(inner.get("class_name")):
            config[key] = {"module": "keras.layers", **inner}
    return {**node, "config": config}


def _sequential(node: dict) -> dict:
    """A Sequential whose input is an ``InputLayer``, as Keras 3 expects: the one Keras 2 built from its first
    layer's input keys (the keys then leave that layer). A bare list of layers (Keras 2.0-2.1) becomes
    ``{"layers": [...]}``."""
    config = node["config"]
    if isinstance(config, list):
        config = {"name": node.get("name") or "sequential", "layers": config}
    layers = [layer for layer in config.get("layers") or [] if isinstance(layer, dict)]
    if (
        not layers
        or layers[0].get("class_name") == "InputLayer"
        or not isinstance(layers[0].get("config"), dict)
    ):
        return {**node, "config": config}
    first = layers[0]
    shape = input_shape_of(first["class_name"], first["config"])
    if shape is None:
        return {**node, "config": config}  # no input recorded: the model is built when it is called
    dtype = first["config"].get("dtype")
    if first["class_name"] == "Embedding":
        dtype = "int32"  # Keras 2 cast the Embedding's input to int32 itself; token ids are integers
    elif not isinstance(dtype, str):
        dtype = "float32"  # a mixed-precision policy object: the input stays float32
    name = f"{first['config'].get('name') or 'layer'}_input"
    input_layer = {"class_name": "InputLayer", "config": {"batch_shape": shape, "dtype": dtype, "name": name}}
    keep = ("input_dim",) if first["class_name"] == "Embedding" else ()  # there it is the vocabulary size
    cleaned = {k: v for k, v in first["config"].items() if k not in INPUT_KEYS or k in keep}
    layers = [input_layer, {**first, "config": cleaned}, *config["layers"][1:]]
    return {**node, "config": {**config, "layers": layers}}


def input_shape_of(cls: str, config: dict) -> list | None:
    """The batch shape Keras 1/2 gave a Sequential whose first layer has this config, or None if none is
    recorded. Keras 2's order: ``batch_input_shape``, ``batch_shape``, then ``input_shape`` (batch free), then
    ``input_dim`` (with ``input_length`` for recurrent layers; an Embedding's ``input_dim`` is its vocabulary
    and its input is ``(batch, input_length)``)."""

    def shape(value):
        if isinstance(value, dict) and value.get("class_name") == "__tuple__":
            value = value.get("items")
        return list(value) if isinstance(value, (list, tuple)) else None

    for key in ("batch_input_shape", "batch_shape"):
        if shape(config.get(key)) is not None:
            return shape(config[key])
    if shape(config.get("input_shape")) is not None:
        return [None, *shape(config["input_shape"])]
    length = config.get("input_length")
    if cls == "Embedding":
        return [None, length] if "input_length" in config else None
    if config.get("input_dim") is None:
        return None
    if cls in RECURRENT or cls == "Bidirectional":
        return [None, length, config["input_dim"]]
    return [None, config["input_dim"]]


def _from_cudnn(node: dict) -> dict:
    """A CuDNN layer as the Keras layer that computes the same (cuDNN's fixed activations)."""
    cls = node["class_name"]
    config = {**node["config"], "activation": "tanh", "recurrent_activation": "sigmoid"}
    if cls == "CuDNNGRU":
        config["reset_after"] = True
    return {**node, "class_name": CUDNN[cls], "config": config}


# -- weights ----------------------------------------------------------------------------------------------


def cudnn_weights(kinds: list[str], values: list[np.ndarray]) -> list[np.ndarray]:
    """Weights stored by CuDNNLSTM/CuDNNGRU (one kernel, recurrent kernel and bias per direction) as the
    Keras LSTM/GRU that computes the same.

    cuDNN reads each gate's block of the stored kernel, (input, units), as its own row-major (units, input)
    matrix W, and computes W x: the Keras kernel of that gate is ``block.reshape(units, input).T``; the
    recurrent block (units, units) likewise gives ``block.T``. cuDNN adds an input and a recurrent bias: LSTM
    sums them; GRU (``reset_after=True``) keeps both, as Keras' (2, 3 * units) bias.
    """
    if len(values) != 3 * len(kinds):
        raise ValueError(
            f"expected {3 * len(kinds)} stored arrays for {len(kinds)} cuDNN direction(s), got {len(values)}"
        )
    out = []
    for i, kind in enumerate(kinds):
        kernel, recurrent, bias = (np.asarray(v) for v in values[3 * i : 3 * i + 3])
        gates = 4 if kind == "LSTM" else 3
        units = recurrent.shape[0]
        inputs = kernel.shape[0]
        kernel = np.hstack([k.reshape(units, inputs).T for k in np.hsplit(kernel, gates)])
        recurrent = np.hstack([r.T for r in np.hsplit(recurrent, gates)])
        bias = bias.reshape(2, gates * units)
        out += [kernel, recurrent, bias.sum(axis=0) if kind == "LSTM" else bias]
    return out
