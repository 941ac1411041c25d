"""Keras models that run one time step at a time: the step model ``export --streaming`` converts, the stateful
model (``stateful=True`` layers) with its state as inputs and outputs, and the full-sequence reference both
are checked against.

A causal model (every layer reads only the past along time) is rebuilt for one step by walking its graph of
layers (``Functional._run_through_graph``), each layer called on the step's tensors:

- a layer that acts on each time step alone (Dense, TimeDistributed(Dense), LayerNormalization, activations,
  merges along the last axis, Embedding, ...) is called as it is, on a time axis of length 1;
- an ``LSTM``/``GRU``/``SimpleRNN`` is called as it is (a stateless twin of a stateful one): its state is made
  an input and an output of the fused ONNX node after the conversion (``graphs.streamstates``), not here;
- a causal ``Conv1D`` reads a buffer of the last ``(kernel_size - 1) * dilation_rate`` steps, an input and
  an output of the step model (``<layer>/buffer``), through a ``valid`` twin of the layer (one output step);
- ``Attention``/``AdditiveAttention``/``MultiHeadAttention`` called with ``use_causal_mask=True`` attend to
  a cache of the keys and values so far (``<layer>/value``, ``<layer>/key``; projected ones for
  MultiHeadAttention), which grows by one step a run up to ``max_steps``.

Any other layer is refused by name with the reason (``causality``: a Bidirectional reads the sequence
backwards; attention without a causal mask, pooling or Flatten read the whole window). Nothing here runs ONNX.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

from edgeattn.convert import causality
from edgeattn.core.errors import UnsupportedModelError

STATE_SEP = (
    "__"  # Keras names cannot hold "/": a state input is named layer__state, renamed layer/state in ONNX
)
NEXT = "_next"  # the output that carries a state to the next run: lstm/h -> lstm/h_next
DEFAULT_MAX_STEPS = 256


@dataclass(frozen=True)
class State:
    """One carried state of a step or stateful model: its graph input and output, its per-sample shape (no batch
    axis; a growing state's first axis is None and starts at length 0)."""

    layer: str
    name: str  # h, c, buffer, key, value
    shape: tuple
    dtype: str = "float32"
    grows: bool = False

    @property
    def input(self) -> str:
        return f"{self.layer}/{self.name}"

    @property
    def output(self) -> str:
        return f"{self.input}{NEXT}"

    @property
    def keras_name(self) -> str:
        return f"{self.layer}{STATE_SEP}{self.name}"

    def as_json(self) -> dict:
        return {"input": self.input, "output": self.output, "layer": self.layer, "shape": list(self.shape),
                "dtype": self.dtype, "grows": self.grows}  # fmt: skip


@dataclass
class StreamModel:
    """A Keras model rebuilt to carry its state (see the module's docstring)."""

    kind: str  # "step" (one time step a run) or "stateful" (a chunk of steps a run)
    model: object  # keras.Model: data inputs, then the Keras-level states' inputs; data outputs, then theirs
    reference: object  # keras.Model: the full-sequence model on a free time axis, stateless
    data_inputs: int
    data_outputs: int
    keras_states: list[State] = field(default_factory=list)  # buffers and caches, in the model's input order
    recurrent: dict = field(
        default_factory=dict
    )  # recurrent layer name -> its State list (h[, c]), made later
    max_steps: int | None = None

    @property
    def states(self) -> list[State]:
        return [*self.keras_states, *(s for states in self.recurrent.values() for s in states)]


def stateful_layers(model) -> list[str]:
    """The names of the recurrent layers of ``model`` that keep their state between calls (``stateful=True``)."""
    from edgeattn.convert.kerasmodel import walk_layers

    return [layer.name for layer in walk_layers(model) if getattr(layer, "stateful", False)]


def build(model, kind: str, max_steps: int | None = DEFAULT_MAX_STEPS) -> StreamModel:
    """The step model (``kind="step"``) or the stateful model (``kind="stateful"``) of ``model``; refuses a
    layer that reads the future (step) with an ``UnsupportedModelError`` that names it."""
    import keras

    if max_steps is not None and max_steps < 2:
        raise UnsupportedModelError(
            f"max_steps must be at least 2 (the step and one before it), got {max_steps}"
        )
    graph = causality.graph_of(model)
    problems = causality.problems(graph, kind)
    if problems:
        what = "stream" if kind == "step" else "carry the state of"
        raise UnsupportedModelError(
            f"cannot {what} {model.name!r}: {problems[0]}" if len(problems) == 1 else
            f"cannot {what} {model.name!r}: {len(problems)} problems:",
            details=problems if len(problems) > 1 else [],
            hint="a step model needs layers that read only the past along time; for a whole-window model "
            "use Predictor.window(T), which re-runs the window on each step",
        )  # fmt: skip
    stream = StreamModel(kind, None, None, len(graph.inputs), len(graph.outputs), max_steps=max_steps)
    twins = {}

    def twin(layer):  # a stateless copy of a stateful recurrent layer or Bidirectional (same weights)
        if not getattr(layer, "stateful", False):
            return layer
        if id(layer) not in twins:
            copy = type(layer).from_config(_stateless(layer.get_config()))
            copy.build(layer.input.shape if hasattr(layer, "input") else None)
            copy.set_weights(layer.get_weights())
            twins[id(layer)] = copy
        return twins[id(layer)]

    free = [
        keras.Input(batch_shape=(None, None, *t.shape[2:]), dtype=t.dtype, name=causality.input_name(t))
        for t in graph.inputs
    ]
    stream.reference = keras.Model(free, graph._run_through_graph(free, operation_fn=twin), name=model.name)
    extra_in, extra_out = [], []
    if kind == "stateful":
        inputs = [
            keras.Input(batch_shape=(None, *t.shape[1:]), dtype=t.dtype, name=causality.input_name(t))
            for t in graph.inputs
        ]
        outputs = graph._run_through_graph(inputs, operation_fn=twin)
    else:
        inputs = [
            keras.Input(batch_shape=(None, 1, *t.shape[2:]), dtype=t.dtype, name=causality.input_name(t))
            for t in graph.inputs
        ]

        def call(op, *args, **kwargs):
            step = _stepper(op)
            if step is None:
                return op(*args, **kwargs)
            return step(op, stream, extra_in, extra_out, max_steps, *args, **kwargs)

        outputs = graph._run_through_graph(inputs, operation_fn=twin, call_fn=call)
    outputs = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
    stream.model = keras.Model([*inputs, *extra_in], [*outputs, *extra_out], name=model.name)
    for layer in stream.model.layers:
        if kind == "step" or layer in twins.values():
            if isinstance(layer, keras.layers.RNN):
                stream.recurrent[layer.name] = _recurrent_states(layer)
            elif isinstance(layer, keras.layers.Bidirectional):  # one fused node; states per direction
                for inner, side in ((layer.forward_layer, "forward"), (layer.backward_layer, "backward")):
                    stream.recurrent[inner.name] = _recurrent_states(inner, layer.name, f"{side}_")
    return stream


def _stateless(config: dict) -> dict:
    """A layer config with ``stateful`` off, in the layers a wrapper (Bidirectional) holds too."""
    config = {**config, "stateful": False} if "stateful" in config else dict(config)
    for key in ("layer", "backward_layer"):
        if isinstance(config.get(key), dict) and isinstance(config[key].get("config"), dict):
            config[key] = {**config[key], "config": _stateless(config[key]["config"])}
    return config


def _stepper(op):
    """The function that calls ``op`` on one step with its carried state (None: ``op`` is called as it is)."""
    import keras

    if isinstance(op, keras.layers.Conv1D) and op.kernel_size[0] > 1:
        return _conv_step
    if isinstance(op, keras.layers.MultiHeadAttention):
        return _mha_step
    if isinstance(op, (keras.layers.Attention, keras.layers.AdditiveAttention)):
        return _attention_step
    return None


def _state_input(stream, extra_in, layer, name: str, shape: tuple, grows: bool = False):
    import keras

    state = State(layer, name, tuple(None if d is None else int(d) for d in shape), grows=grows)
    stream.keras_states.append(state)
    tensor = keras.Input(batch_shape=(None, *state.shape), name=state.keras_name)
    extra_in.append(tensor)
    return tensor


def _joined(past, step, name: str):
    """``past`` and this ``step`` along time (a layer named after its owner: names stay unique)."""
    import keras

    return keras.layers.Concatenate(axis=1, name=name)([past, step])


def _kept(tensor, max_steps, name: str):
    """The last ``max_steps - 1`` steps of a cache (with the next step, ``max_steps`` are attended to)."""
    return tensor if max_steps is None else _layer("Tail", name, -(max_steps - 1))(tensor)


def _conv_step(op, stream, extra_in, extra_out, max_steps, x, **kwargs):

    reach = (op.kernel_size[0] - 1) * op.dilation_rate[0]
    buffer = _state_input(stream, extra_in, op.name, "buffer", (reach, x.shape[-1]))
    window = _joined(buffer, x, f"{op.name}{STATE_SEP}window")
    valid = type(op).from_config({**op.get_config(), "padding": "valid", "name": op.name})
    valid.build(window.shape)
    valid.set_weights(op.get_weights())
    extra_out.append(_layer("Tail", f"{op.name}{STATE_SEP}buffer_next", -reach)(window))
    return valid(window)


def _attention_step(op, stream, extra_in, extra_out, max_steps, inputs, **kwargs):

    query, value, *key = inputs
    cached = []
    for role, tensor in (("value", value), *((("key", key[0]),) if key else ())):
        past = _state_input(stream, extra_in, op.name, role, (None, tensor.shape[-1]), grows=True)
        everything = _joined(past, tensor, f"{op.name}{STATE_SEP}{role}_all")
        extra_out.append(_kept(everything, max_steps, f"{op.name}{STATE_SEP}{role}_next"))
        cached.append(everything)
    return op([query, *cached])


def _mha_step(op, stream, extra_in, extra_out, max_steps, query, value, key=None, **kwargs):

    packed = key is None or key is value
    key = value if key is None else key
    packed = packed and query is value and op._output_shape is None  # self-attention: one q|k|v product
    layer = _layer("MultiHeadStep", op.name, op, packed)  # its first output is the layer's
    past_key = _state_input(stream, extra_in, op.name, "key", (None, op._num_heads, op._key_dim), grows=True)
    value_dim = op._value_dim or op._key_dim
    past_value = _state_input(
        stream, extra_in, op.name, "value", (None, op._num_heads, value_dim), grows=True
    )
    out, keys, values = layer(query, value, key, past_key, past_value)
    extra_out.extend([_kept(keys, max_steps, f"{op.name}{STATE_SEP}key_next"),
                      _kept(values, max_steps, f"{op.name}{STATE_SEP}value_next")])  # fmt: skip
    return out


def _recurrent_states(layer, owner: str | None = None, prefix: str = "") -> list[State]:
    """The states of one recurrent layer, named ``lstm/h`` (and ``lstm/c`` for an LSTM); one direction of a
    Bidirectional ``bi``: ``bi/forward_h``, ``bi/backward_h``, ..."""
    import keras

    names = ("h", "c") if isinstance(layer, keras.layers.LSTM) else ("h",)
    return [State(owner or layer.name, f"{prefix}{n}", (int(layer.units),)) for n in names]


@functools.cache
def _classes() -> dict:
    """The two Keras layers of the step model that Keras lacks (made once, when a model is streamed)."""
    import keras

    class Tail(keras.layers.Layer):
        """The last ``-start`` steps along time."""

        def __init__(self, start: int, **kwargs):
            super().__init__(**kwargs)
            self.start = start

        def call(self, x):
            return x[:, self.start :]

    class MultiHeadStep(keras.layers.Layer):
        """One query step of a MultiHeadAttention against the projected keys and values so far (the layer's
        own projections and attention, its weights)."""

        def __init__(self, mha, packed: bool, **kwargs):
            super().__init__(**kwargs)
            self.mha, self.packed = mha, packed

        def call(self, query, value, key, past_key, past_value):
            mha = self.mha
            if self.packed:
                return self._packed(query, past_key, past_value)
            q = mha._query_dense(query)
            keys = keras.ops.concatenate([past_key, mha._key_dense(key)], axis=1)
            values = keras.ops.concatenate([past_value, mha._value_dense(value)], axis=1)
            out, _ = mha._compute_attention(q, keys, values, attention_mask=None, training=False)
            return mha._output_dense(out), keys, values

        def _packed(self, x, past_key, past_value):
            """The same arithmetic in fewer kernels: one product for q|k|v (1/sqrt(d) folded into q), one
            Reshape per head split (one step: no transpose), the two products around the softmax."""
            ops, mha = keras.ops, self.mha
            heads, dk = mha._num_heads, mha._key_dim
            dv = mha._value_dim or dk
            denses = (mha._query_dense, mha._key_dense, mha._value_dense)
            scales = (mha._inverse_sqrt_key_dim, 1.0, 1.0)
            kernel = ops.concatenate(
                [ops.reshape(d.kernel, (x.shape[-1], -1)) * c for d, c in zip(denses, scales)], 1
            )
            qkv = ops.matmul(x, kernel)
            if mha._use_bias:
                qkv = qkv + ops.concatenate(
                    [ops.reshape(d.bias, (-1,)) * c for d, c in zip(denses, scales)], 0
                )
            q, k, v = ops.split(qkv, [heads * dk, 2 * heads * dk], axis=-1)
            keys = ops.concatenate([past_key, ops.reshape(k, (-1, 1, heads, dk))], axis=1)
            values = ops.concatenate([past_value, ops.reshape(v, (-1, 1, heads, dv))], axis=1)
            scores = ops.matmul(ops.reshape(q, (-1, heads, 1, dk)), ops.transpose(keys, (0, 2, 3, 1)))
            out = ops.matmul(ops.softmax(scores, axis=-1), ops.transpose(values, (0, 2, 1, 3)))
            out = ops.matmul(
                ops.reshape(out, (-1, 1, heads * dv)), ops.reshape(mha._output_dense.kernel, (heads * dv, -1))
            )
            return (out + mha._output_dense.bias if mha._use_bias else out), keys, values

    return {"Tail": Tail, "MultiHeadStep": MultiHeadStep}


def _layer(kind: str, name: str, *args):
    return _classes()[kind](*args, name=name)
