"""How many parameters a model config implies, counted from the config alone (pure data: no Keras).

Keras builds a checked config in edgeattn's own process, with no memory bound: a config that asks for
``LSTM(units=10**6)`` (four 10^6 x 10^6 matrices) would exhaust the machine before any weight is read. So the
loader counts what each layer's arguments imply (units, kernel sizes, heads, vocabulary sizes) before the build
and refuses a layer, or a model, above a limit (``--max-params``), naming the layer.

The count follows each layer's last-axis width through the graph (a functional model's inbound nodes, or a
Sequential's order); where a width cannot be read from the config, 1 stands in, so the count is a lower bound
of what Keras would allocate: it never refuses a model for a width it had to guess.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod

from edgeattn.core.errors import InputError

RECURRENT_GATES = {"LSTM": 4, "CuDNNLSTM": 4, "GRU": 3, "CuDNNGRU": 3, "SimpleRNN": 1}
NORMALIZATIONS = {"LayerNormalization": 2, "BatchNormalization": 4, "GroupNormalization": 2}


@dataclass(frozen=True)
class LayerCount:
    label: str  # "LSTM layer 'lstm'"
    parameters: int


def _int(value, default: int = 1) -> int:
    if isinstance(value, bool):
        return default
    if isinstance(value, int) and value > 0:
        return value
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, int) and v > 0 for v in value):
        return prod(value)
    return default


def _dims(shape) -> tuple | None:
    """A recorded shape (list, tuple or Keras 2's ``__tuple__``) as a tuple of ints and Nones, or None."""
    if isinstance(shape, dict) and shape.get("class_name") == "__tuple__":
        shape = shape.get("items")
    if isinstance(shape, (list, tuple)) and all(d is None or (isinstance(d, int) and d >= 0) for d in shape):
        return tuple(shape)
    return None


def _size(shape: tuple | None) -> int | None:
    return prod(shape) if shape and all(isinstance(d, int) for d in shape) else None


def _inner(config: dict) -> tuple[str, dict]:
    inner = config.get("layer")
    inner = inner if isinstance(inner, dict) else {}
    cfg = inner.get("config")
    return str(inner.get("class_name", "")), cfg if isinstance(cfg, dict) else {}


def layer_parameters(cls: str, config: dict, shape: tuple | None) -> tuple[int, tuple | None]:
    """(parameters, output shape) of one layer of class ``cls`` fed inputs of ``shape`` (without the batch
    axis; None or None axes where unknown)."""
    d = shape[-1] if shape and isinstance(shape[-1], int) else 1
    lead = shape[:-1] if shape else ()
    if cls == "InputLayer":
        full = _dims(config.get("batch_shape") or config.get("batch_input_shape"))
        return 0, full[1:] if full else None
    if cls == "Dense":
        units = _int(config.get("units"))
        return d * units + units, (*lead, units)
    if cls in RECURRENT_GATES:
        units, gates = _int(config.get("units")), RECURRENT_GATES[cls]
        second_bias = gates * units if config.get("reset_after") is True else 0  # a GRU's recurrent bias
        out = (*lead, units) if config.get("return_sequences") else (units,)
        return gates * (d * units + units * units + units) + second_bias, out
    if cls == "Bidirectional":
        count, out = layer_parameters(*_inner(config), shape)
        if out and config.get("merge_mode", "concat") == "concat":
            out = (*out[:-1], 2 * out[-1])
        return 2 * count, out
    if cls == "TimeDistributed":
        return layer_parameters(*_inner(config), shape)
    if cls == "Embedding":
        output = _int(config.get("output_dim"))
        return _int(config.get("input_dim")) * output, (*(shape or (None,)), output)
    if cls == "Conv1D":
        filters = _int(config.get("filters"))
        return _int(config.get("kernel_size")) * d * filters + filters, (*lead, filters)
    if cls == "EinsumDense":
        out = _dims(config.get("output_shape"))
        return d * _int(config.get("output_shape")), out
    if cls == "MultiHeadAttention":
        heads, key = _int(config.get("num_heads")), _int(config.get("key_dim"))
        value = _int(config.get("value_dim"), key)
        return heads * (2 * key * d + 2 * value * d), shape
    if cls == "Attention" and "units" in config:  # the attention package's / edgeattn's layer
        units = _int(config.get("units"))
        bahdanau = d * d + d if config.get("score") == "bahdanau" else 0  # two d x d and a d x 1 (vs one)
        return d * d + 2 * d * units + bahdanau, (units,)
    if cls in NORMALIZATIONS:
        return NORMALIZATIONS[cls] * d, shape
    if cls == "TextVectorization":
        return _int(config.get("max_tokens")), (_int(config.get("output_sequence_length"), 0) or None,)
    # layers that move values around: their output shape, so that a Dense after them is counted right
    if cls == "Flatten":
        return 0, (_size(shape),)
    if cls == "Reshape":
        target = _dims(config.get("target_shape"))
        return 0, target
    if cls == "Permute" and shape and isinstance(config.get("dims"), list):
        dims = config["dims"]
        ok = all(isinstance(i, int) and 1 <= i <= len(shape) for i in dims)
        return 0, tuple(shape[i - 1] for i in dims) if ok else None
    if cls == "RepeatVector":
        return 0, (config.get("n") if isinstance(config.get("n"), int) else None, *(shape or ()))
    if cls in ("GlobalAveragePooling1D", "GlobalMaxPooling1D"):
        return 0, shape[-1:] if shape else None
    return 0, shape


def _inbound(layer: dict) -> list[str]:
    """The names of the layers that feed a functional model's layer (Keras 2 and Keras 3 node forms)."""
    names: list[str] = []

    def visit(value) -> None:
        if isinstance(value, dict):
            history = (value.get("config") or {}).get("keras_history") if value.get("class_name") else None
            if isinstance(history, list) and history and isinstance(history[0], str):
                names.append(history[0])
                return
            for item in value.values():
                visit(item)
        elif isinstance(value, list):
            if len(value) >= 3 and isinstance(value[0], str) and isinstance(value[1], int):
                names.append(value[0])  # [layer, node_index, tensor_index(, kwargs)]
                return
            for item in value:
                visit(item)

    visit(layer.get("inbound_nodes") or [])
    return names


def count(config: dict, shape: tuple | None = None) -> tuple[list[LayerCount], tuple | None]:
    """Each layer's implied parameters (nested models counted layer by layer), and the output shape."""
    from edgeattn.convert.legacy import input_shape_of

    cls = config.get("class_name")
    body = config.get("config")
    layers = body if isinstance(body, list) else body.get("layers") if isinstance(body, dict) else None
    if not isinstance(layers, list):
        cfg = body if isinstance(body, dict) else {}
        name = cfg.get("name") or config.get("name")
        parameters, out = layer_parameters(str(cls), cfg, shape)
        return [LayerCount(f"{cls} layer {name!r}" if name else str(cls), parameters)], out
    found: list[LayerCount] = []
    shapes: dict[str, tuple | None] = {}
    current = shape
    for index, layer in enumerate(layers):
        if not isinstance(layer, dict):
            continue
        cfg = layer.get("config") if isinstance(layer.get("config"), dict) else {}
        name = layer.get("name") or cfg.get("name")
        if index == 0 and layer.get("class_name") != "InputLayer":
            # a Keras 1/2 Sequential's input, given on its first layer (legacy.input_shape_of)
            recorded = _dims(input_shape_of(str(layer.get("class_name")), cfg))
            current = recorded[1:] if recorded else current
        feeding = [shapes.get(n) for n in _inbound(layer)]
        if cls != "Sequential" and feeding:
            known = [s for s in feeding if s]
            if layer.get("class_name") == "Concatenate" and known and len(known) == len(feeding):
                lasts = [s[-1] for s in known]
                current = (*known[0][:-1], sum(lasts)) if all(isinstance(v, int) for v in lasts) else known[0]
            else:
                current = known[0] if known else None
        counted, current = count(layer, current)
        found += counted
        if isinstance(name, str):
            shapes[name] = current
    return found, current


def check(config: dict, limit: int, shown) -> int:
    """Refuse (``InputError``) a config with a layer, or a total, over ``limit`` parameters. Returns the total."""
    counts, _ = count(config)
    total = sum(c.parameters for c in counts)
    largest = max(counts, key=lambda c: c.parameters, default=None)
    if largest is not None and largest.parameters > limit:
        raise InputError(
            f"refused to build {shown}: {largest.label} implies {largest.parameters:,} parameters, over the "
            f"limit of {limit:,} (--max-params)",
            hint="nothing was built; raise --max-params only for a file you trust to be that large",
        )
    if total > limit:
        raise InputError(
            f"refused to build {shown}: its layers imply {total:,} parameters, over the limit of {limit:,} "
            f"(--max-params; the largest is {largest.label}, {largest.parameters:,})",
            hint="nothing was built; raise --max-params only for a file you trust to be that large",
        )
    return total
