"""Every Keras recurrent layer as one fused ONNX ``LSTM``, ``GRU`` or ``RNN`` node.

tf2onnx fuses Keras 3 ``LSTM`` and ``Bidirectional(LSTM)`` into ONNX ``LSTM`` nodes but leaves ``GRU`` and
``SimpleRNN`` as ``Loop``s. edgeattn therefore converts a *stand-in* model: the same model with every
recurrent layer replaced by an ``LSTM`` (and ``TimeDistributed(Dense)`` by the ``Dense`` itself) of the same width and flags (``return_sequences``, ``go_backwards``,
``Bidirectional`` merge mode), whose kernels are filled with a constant that is unique to that layer and
direction. tf2onnx turns each stand-in into a fused ``LSTM`` node, and the constant in the node's ``W``
initializer says which Keras layer it stands for. ``swap_nodes`` then rewrites each such node into the real
one (``LSTM``, ``GRU`` with ``linear_before_reset`` = ``reset_after``, or ``RNN``) with the real layer's
weights, biases and activations, emitted from the Keras layer itself. Everything around the node (reversal
for ``go_backwards``, transposes, the merge of a ``Bidirectional``) stays what tf2onnx made of it.

The rewrite is proved like any export: the parity check compares the final graph with the original model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgeattn.convert import standins
from edgeattn.core.errors import UnsupportedModelError

# Keras activation name -> ONNX recurrent activation (name, alpha, beta).
ACTIVATIONS = {
    "tanh": ("Tanh", None, None),
    "sigmoid": ("Sigmoid", None, None),
    "relu": ("Relu", None, None),
    "linear": ("Affine", 1.0, 0.0),
    "hard_sigmoid": ("HardSigmoid", 1.0 / 6.0, 0.5),  # Keras 3: relu6(x + 3) / 6
    "hard_sigmoid_keras2": ("HardSigmoid", 0.2, 0.5),  # Keras 2 files: clip(0.2 x + 0.5, 0, 1)
    "softsign": ("Softsign", None, None),
    "softplus": ("Softplus", None, None),
}
# The ONNX activation slots of each node (f, g[, h]) and the Keras cell attribute that fills each.
ROLES = {
    "LSTM": ("recurrent_activation", "activation", "activation"),
    "GRU": ("recurrent_activation", "activation"),
    "RNN": ("activation",),
}
FILL_STEP = 1.0 / 1024.0  # stand-in kernels hold k * FILL_STEP: exact in float32, distinct per direction


@dataclass
class Direction:
    """One direction of one Keras recurrent layer, and the constant its stand-in's kernel holds."""

    layer: object  # keras.layers.LSTM | GRU | SimpleRNN
    fill: float


def unsupported(model) -> list[str]:
    """Why the recurrent layers of ``model`` cannot be exported as fused nodes (empty when they can)."""
    import keras

    from edgeattn.convert.kerasmodel import walk_layers

    problems = []
    for layer in walk_layers(model):
        if isinstance(layer, keras.layers.Embedding) and getattr(layer, "mask_zero", False):
            problems.append(
                f"Embedding layer {layer.name!r} has mask_zero=True: Keras carries the last state across "
                "masked steps, which a fused ONNX node does not do"
            )
        elif isinstance(layer, keras.layers.Masking):
            problems.append(f"Masking layer {layer.name!r}: masked steps cannot be exported as a fused node")
        elif isinstance(layer, keras.layers.RNN):
            problems.extend(_unsupported_rnn(layer))
        elif isinstance(layer, keras.layers.Bidirectional):  # its two directions are layers of their own
            problems.extend(_unsupported_rnn(layer.forward_layer, f"in Bidirectional {layer.name!r}"))
            problems.extend(_unsupported_rnn(layer.backward_layer, f"in Bidirectional {layer.name!r}"))
    return problems


def _unsupported_rnn(layer, where: str = "") -> list[str]:
    import keras

    problems = []
    name = f"{layer.name!r}" + (f" ({where})" if where else "")
    if type(layer) not in (keras.layers.LSTM, keras.layers.GRU, keras.layers.SimpleRNN):
        problems.append(f"{type(layer).__name__} layer {name}: only LSTM, GRU and SimpleRNN are fused")
        return problems
    if layer.stateful:
        problems.append(f"{name} is stateful where edgeattn cannot carry its state (inside a nested model)")
    if layer.return_state and not isinstance(layer, keras.layers.LSTM):
        problems.append(f"{name} has return_state=True: only LSTM states can be exported")
    for role in ("activation", "recurrent_activation"):
        fn = getattr(layer.cell, role, None)
        activation = getattr(fn, "__name__", str(fn))
        if fn is not None and activation not in ACTIVATIONS:
            problems.append(
                f"{name} uses {role}={activation!r}; fused nodes support {', '.join(sorted(ACTIVATIONS))}"
            )
    return problems


def is_graph_model(model) -> bool:
    """A functional or Sequential model (a graph of layers), as opposed to a subclassed one."""
    import keras
    from keras.src.models.functional import Functional

    return isinstance(model, (Functional, keras.Sequential))


def stand_in(model):
    """The model with every recurrent layer replaced by a marked LSTM; returns (stand-in model, directions)."""
    import keras

    directions: list[Direction] = []

    def marked_lstm(layer):
        fill = (len(directions) + 1) * FILL_STEP
        directions.append(Direction(layer, fill))
        return keras.layers.LSTM(
            layer.units,
            return_sequences=layer.return_sequences,
            return_state=layer.return_state,
            go_backwards=layer.go_backwards,
            kernel_initializer=keras.initializers.Constant(fill),
            recurrent_initializer=keras.initializers.Constant(fill),
            name=layer.name,
        )

    def replace(layer):
        cheaper = standins.stand_in(layer)  # MultiHeadAttention, pointwise Conv1D: fewer kernels
        if cheaper is not layer:
            return cheaper
        if isinstance(layer, keras.Model) and not is_graph_model(layer):
            # A subclassed model cannot be cloned layer by layer; tf2onnx fuses its LSTMs itself, and a GRU
            # or SimpleRNN inside it stays a Loop, which the structure check then refuses by name.
            return layer
        if isinstance(layer, keras.Model):
            return keras.models.clone_model(layer, clone_function=replace)
        if isinstance(layer, keras.layers.TimeDistributed) and isinstance(layer.layer, keras.layers.Dense):
            # A Dense acts on the last axis of any rank: the same arithmetic, without the per-step loop
            # that tf2onnx would turn into a Loop.
            return _last_axis(layer.layer, layer.name)
        if isinstance(layer, keras.layers.Bidirectional):
            forward = marked_lstm(layer.forward_layer)
            backward = marked_lstm(layer.backward_layer)
            return keras.layers.Bidirectional(
                forward, backward_layer=backward, merge_mode=layer.merge_mode, name=layer.name
            )
        if isinstance(layer, keras.layers.RNN):
            return marked_lstm(layer)
        return layer

    return keras.models.clone_model(model, clone_function=replace), directions


def _last_axis(inner, name: str):
    """A layer that applies ``inner`` (a ``Dense``, which maps the last axis of any rank) as
    ``TimeDistributed(inner)`` did, ignoring the mask that TimeDistributed accepted."""
    import keras

    class LastAxis(keras.layers.Layer):
        def __init__(self, inner, **kwargs):
            super().__init__(**kwargs)
            self.inner = inner

        def call(self, inputs, mask=None):
            return self.inner(inputs)

    return LastAxis(inner, name=name)


def swap_nodes(proto: onnx.ModelProto, directions: list[Direction]) -> dict[str, list]:
    """Rewrite each stand-in ``LSTM`` node into the real layer's node. Returns the Keras layers each rewritten
    node computes (one per direction), by node name."""
    graph = proto.graph
    initializers = {t.name: t for t in graph.initializer}
    by_fill = {np.float32(d.fill): d for d in directions}
    used = {name for node in graph.node for name in node.input}
    seen: set[int] = set()
    rewritten = {}
    for index, node in enumerate(list(graph.node)):
        if node.op_type != "LSTM" or node.input[1] not in initializers:
            continue
        marks = [np.unique(w) for w in numpy_helper.to_array(initializers[node.input[1]])]
        if not any(m.size == 1 and m[0] in by_fill for m in marks):
            continue  # an LSTM converted as it is (inside a subclassed model): its real weights
        found = []
        for values in marks:
            if values.size != 1 or values[0] not in by_fill:
                raise UnsupportedModelError(
                    f"could not tell which Keras layer the fused node {node.name!r} stands for"
                )
            found.append(by_fill[values[0]])
            seen.add(id(found[-1]))
        graph.node.remove(node)
        graph.node.insert(index, _fused_node(node, found, graph, used))
        rewritten[node.name] = [d.layer for d in found]
    missing = [d.layer.name for d in directions if id(d) not in seen]
    if missing:
        raise UnsupportedModelError(
            f"tf2onnx did not fuse the recurrent layer {missing[0]!r} into one node",
            hint="run with --debug and report the model's layers",
        )
    return rewritten


def _fused_node(stub: onnx.NodeProto, directions: list[Direction], graph, used: set[str]) -> onnx.NodeProto:
    import keras

    layer = directions[0].layer
    kind = {keras.layers.LSTM: "LSTM", keras.layers.GRU: "GRU", keras.layers.SimpleRNN: "RNN"}[type(layer)]
    if kind != "LSTM" and len(stub.output) > 2 and stub.output[2] in used:
        raise UnsupportedModelError(f"{layer.name!r}: the cell state of a {kind} does not exist")
    weights = [_onnx_weights(kind, d.layer) for d in directions]
    base = stub.name
    names = []
    for suffix, stacked in zip("WRB", zip(*weights)):
        name = f"{base}_{suffix}"
        graph.initializer.append(numpy_helper.from_array(np.stack(stacked).astype(np.float32), name))
        names.append(name)
    inputs = [stub.input[0], *names, *stub.input[4 : 7 if kind == "LSTM" else 6]]
    outputs = list(stub.output[: 3 if kind == "LSTM" else 2])
    activations, alphas, betas = [], [], []
    for d in directions:
        for role in ROLES[kind]:
            op, alpha, beta = ACTIVATIONS[getattr(d.layer.cell, role).__name__]
            activations.append(op)
            alphas.append(alpha)
            betas.append(beta)
    attrs = {
        "hidden_size": int(layer.units),
        "direction": helper.get_attribute_value(next(a for a in stub.attribute if a.name == "direction")),
        "activations": activations,
    }
    if any(a is not None for a in alphas):
        # Per ONNX, the alpha/beta lists hold entries only for activations that take them, in order.
        attrs["activation_alpha"] = [a for a in alphas if a is not None]
        attrs["activation_beta"] = [b for b in betas if b is not None]
    if kind == "GRU":
        attrs["linear_before_reset"] = int(bool(layer.cell.reset_after))
    return helper.make_node(kind, inputs, outputs, name=base, **attrs)


def _onnx_weights(kind: str, layer) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """W, R, B of one direction in ONNX layout from a Keras layer's cell."""
    cell = layer.cell
    units = int(cell.units)
    kernel = np.asarray(cell.kernel.numpy(), np.float32)
    recurrent = np.asarray(cell.recurrent_kernel.numpy(), np.float32)
    bias = np.asarray(cell.bias.numpy(), np.float32) if cell.use_bias else None
    if kind == "LSTM":
        # Keras gates i, f, c, o; ONNX gates i, o, f, c.
        def order(m):
            i, f, c, o = np.split(m, 4, axis=-1)
            return np.concatenate([i, o, f, c], axis=-1)

        kernel, recurrent = order(kernel), order(recurrent)
        w_bias = order(bias) if bias is not None else np.zeros(4 * units, np.float32)
        r_bias = np.zeros(4 * units, np.float32)
    elif kind == "GRU":
        # Keras and ONNX both order the gates z, r, h. reset_after keeps a separate recurrent bias.
        if bias is None:
            w_bias = r_bias = np.zeros(3 * units, np.float32)
        elif bias.ndim == 2:
            w_bias, r_bias = bias[0], bias[1]
        else:
            w_bias, r_bias = bias, np.zeros(3 * units, np.float32)
    else:
        w_bias = bias if bias is not None else np.zeros(units, np.float32)
        r_bias = np.zeros(units, np.float32)
    return kernel.T, recurrent.T, np.concatenate([w_bias, r_bias])
