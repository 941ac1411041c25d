"""Which layers read only the past along time: the checks ``export --streaming`` makes before it builds a step
model (``streaming.build``), each problem one line naming the layer and the reason.

A layer is causal when it acts on each step alone (Dense, activations, LayerNormalization along the last axis,
merges, Embedding, TimeDistributed), when it is an LSTM/GRU/SimpleRNN read forwards, a ``Conv1D`` with
``padding="causal"`` (or a kernel of 1) and stride 1, or an attention called with ``use_causal_mask=True`` and no
other mask. A layer that carries a state (recurrent, causal Conv1D, causal attention) must be called once, at
the top level, and a recurrent one must not take its initial state from another layer.
"""

from __future__ import annotations

from edgeattn.core.errors import UnsupportedModelError

# Layers that act on each time step alone (on the last axis), and so are causal as they are.
_POINTWISE = (
    "InputLayer", "Dense", "Activation", "Dropout", "SpatialDropout1D", "GaussianNoise", "GaussianDropout",
    "AlphaDropout", "LayerNormalization", "BatchNormalization", "UnitNormalization", "Add", "Subtract",
    "Multiply", "Average", "Maximum", "Minimum", "Concatenate", "Embedding", "ReLU", "LeakyReLU", "PReLU",
    "ELU", "Softmax", "Rescaling", "Identity",
)  # fmt: skip
_LAST_AXIS = ("LayerNormalization", "BatchNormalization", "UnitNormalization", "Concatenate", "Softmax")


def graph_of(model):
    """The functional graph of ``model`` (a Sequential's inner one)."""
    from keras.src.models.functional import Functional

    inner = getattr(model, "_functional", None) if not isinstance(model, Functional) else model
    if inner is None:
        raise UnsupportedModelError(
            f"{model.name!r} is a subclassed model: edgeattn streams functional and Sequential models only",
            hint="rebuild it with the functional API (keras.Input and layer calls)",
        )
    return inner


def input_name(tensor) -> str:
    return tensor._keras_history.operation.name


def _calls(graph):
    """(operation, call kwargs, rank of its first input) of every node of ``graph``."""
    for nodes in graph._nodes_by_depth.values():
        for node in nodes:
            if node.operation is not None and not node.is_input:
                first = node.input_tensors[0] if node.input_tensors else None
                yield (
                    node.operation,
                    dict(node.arguments.kwargs),
                    len(first.shape) if first is not None else 0,
                )


def problems(graph, kind: str) -> list[str]:
    """Why ``graph`` cannot carry its state (a step model: also why it reads more than the past), one line
    each, naming the layer."""
    import keras

    problems, calls = [], {}
    for op, kwargs, rank in _calls(graph):
        calls[id(op)] = calls.get(id(op), 0) + 1
        if calls[id(op)] == 2 and _has_state(op):
            problems.append(
                f"{type(op).__name__} layer {op.name!r} is called more than once: one state per layer"
            )
        if isinstance(op, keras.layers.RNN) and kwargs.get("initial_state") is not None:
            problems.append(
                f"{type(op).__name__} layer {op.name!r} takes its initial state from another layer"
            )
        why = _why_not_causal(op, kwargs, rank) if kind == "step" else None
        if why:
            problems.append(why)
    if kind == "step":
        for t in graph.inputs:
            if len(t.shape) < 3 and "int" not in str(t.dtype):
                problems.append(
                    f"input {input_name(t)!r} of shape {tuple(t.shape)} has no time axis to step along"
                )
    return problems


def _has_state(op) -> bool:
    """Whether a step of ``op`` carries something: a recurrent layer, a causal Conv1D, a causal attention."""
    import keras

    carrying = (
        keras.layers.RNN,
        keras.layers.Bidirectional,
        keras.layers.Attention,
        keras.layers.MultiHeadAttention,
    )
    return isinstance(op, carrying) or (isinstance(op, keras.layers.Conv1D) and op.kernel_size[0] > 1)


def _why_not_causal(op, kwargs, rank: int = 3) -> str | None:
    """Why the layer ``op``, called with ``kwargs`` on an input of ``rank`` axes, reads more than the past
    along time (None: it does not)."""
    import keras

    kind, name = type(op).__name__, op.name
    if isinstance(op, keras.Model):  # a nested model: each step as it is, so only layers without state
        inner = graph_of(op)
        found = [w for w in (_why_not_causal(o, k, r) for o, k, r in _calls(inner)) if w]
        found += [
            f"{type(o).__name__} layer {o.name!r} carries a state"
            for o, _, _ in _calls(inner)
            if _has_state(o)
        ]
        return f"nested model {name!r}: {found[0]} (a step is taken at the top level only)" if found else None
    if (isinstance(op, keras.layers.Embedding) and op.mask_zero) or isinstance(op, keras.layers.Masking):
        return f"{kind} layer {name!r} masks steps, which a step model cannot skip"
    if isinstance(op, keras.layers.Bidirectional):
        return f"Bidirectional layer {name!r} reads the sequence backwards"
    if isinstance(op, keras.layers.RNN):
        if type(op) not in (keras.layers.LSTM, keras.layers.GRU, keras.layers.SimpleRNN):
            return f"{kind} layer {name!r}: only LSTM, GRU and SimpleRNN are streamed"
        if op.go_backwards:
            return f"{kind} layer {name!r} has go_backwards=True: it reads the sequence backwards"
        return None
    if isinstance(op, keras.layers.Conv1D):
        if op.strides[0] != 1:
            return f"Conv1D layer {name!r} has strides {op.strides[0]}: one output per step needs stride 1"
        if op.padding != "causal" and op.kernel_size[0] != 1:
            return f"Conv1D layer {name!r} pads {op.padding!r}: it reads future steps (padding='causal' does not)"
        return None
    if isinstance(
        op, (keras.layers.Attention, keras.layers.AdditiveAttention, keras.layers.MultiHeadAttention)
    ):
        if not kwargs.get("use_causal_mask"):
            return f"{kind} layer {name!r} attends over the whole window (it is not called with use_causal_mask=True)"
        if kwargs.get("return_attention_scores"):
            return f"{kind} layer {name!r}: its attention scores cannot be streamed"
        masks = [
            k for k, v in kwargs.items() if k.endswith("mask") and k != "use_causal_mask" and v is not None
        ]
        if masks:
            return f"{kind} layer {name!r} is called with {masks[0]}=: only the causal mask is streamed"
        if isinstance(op, keras.layers.MultiHeadAttention) and op._attention_axes not in (None, (1,)):
            return f"MultiHeadAttention layer {name!r} attends over axes {op._attention_axes}"
        return None
    if kind == "TimeDistributed":  # its layer runs on each step alone
        return None
    if kind in _POINTWISE:
        axis = getattr(op, "axis", -1)
        axis = axis[0] if isinstance(axis, (list, tuple)) and len(axis) == 1 else axis
        if kind in _LAST_AXIS and axis not in (-1, rank - 1):
            return f"{kind} layer {name!r} acts along axis {axis}, not on each step alone"
        return None
    if kind.startswith("Global") or "Pooling" in kind:
        return f"{kind} layer {name!r} pools over the whole window"
    if kind in ("Flatten", "Reshape", "Permute", "RepeatVector", "Cropping1D", "ZeroPadding1D"):
        return f"{kind} layer {name!r} reshapes the time axis"
    return f"{kind} layer {name!r}: edgeattn cannot tell that it reads only the past along time"
