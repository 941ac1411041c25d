"""Facts about a Keras model that the export and the parity check need: its layers (nested models included),
its token range, its outputs on given inputs. Keras is imported inside the functions."""

from __future__ import annotations

import warnings

import numpy as np


def walk_layers(model):
    """Every layer of a Keras model, descending into nested models (not into wrappers such as Bidirectional)."""
    for layer in getattr(model, "layers", []):
        yield layer
        yield from walk_layers(layer)


def vocab_size(keras_model) -> int | None:
    """The smallest ``input_dim`` of the model's Embedding layers, if any: seeded token ids below it are
    valid for every Embedding (a model may embed tokens and positions from two integer inputs)."""
    import keras

    dims = [
        int(layer.input_dim)
        for layer in walk_layers(keras_model)
        if isinstance(layer, keras.layers.Embedding)
    ]
    return min(dims) if dims else None


def keras_outputs(keras_model, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    """The Keras model's outputs as a list of arrays, inference mode."""
    import keras

    args = [feed[name] for name in feed]
    with warnings.catch_warnings():
        # Keras 2 configs list a single input as [input]; Keras 3 warns about the structure, harmlessly.
        warnings.filterwarnings("ignore", message="The structure of `inputs`")
        result = keras_model(args[0] if len(args) == 1 else args, training=False)
    result = result if isinstance(result, (list, tuple)) else [result]
    return [np.asarray(keras.ops.convert_to_numpy(r)) for r in result]


def layer_outputs(model) -> list[tuple[str, object]]:
    """(name, output tensor) of the layers whose output can be compared between Keras and ONNX, in the
    model's order: each call of this model's own graph (a layer may be shared with another model) to a layer
    called once here, its first output when that is a float tensor and not already a model output."""
    import keras

    graph = getattr(model, "_functional", None) or model  # a Sequential keeps its graph there
    by_depth = getattr(graph, "_nodes_by_depth", None)
    if not by_depth:
        return []
    nodes = [node for depth in sorted(by_depth, reverse=True) for node in by_depth[depth]]
    calls: dict[int, int] = {}
    for node in nodes:
        calls[id(node.operation)] = calls.get(id(node.operation), 0) + 1
    model_outputs = {id(t) for t in model.outputs}
    found = []
    for node in nodes:
        layer = node.operation
        tensors = list(node.output_tensors)
        if isinstance(layer, keras.layers.InputLayer) or calls[id(layer)] != 1 or not tensors:
            continue
        if id(tensors[0]) in model_outputs or "float" not in str(tensors[0].dtype):
            continue
        found.append((layer.name, tensors[0]))
    return found


def with_layer_outputs(model, names: list[str]):
    """The same model (same layers) with the outputs of the named layers (see ``layer_outputs``) appended."""
    import keras

    tensors = dict(layer_outputs(model))
    return keras.Model(model.inputs, [*model.outputs, *[tensors[name] for name in names]], name=model.name)


def count_recurrent_layers(keras_model) -> int:
    """How many fused recurrent nodes the export must hold (a Bidirectional counts once: one node)."""
    import keras

    recurrent = (keras.layers.RNN, keras.layers.Bidirectional)
    return sum(1 for layer in walk_layers(keras_model) if isinstance(layer, recurrent))


def time_free(keras_model) -> bool:
    """Whether an input of the model has a free time axis."""
    return any(len(t.shape) >= 2 and t.shape[1] is None for t in keras_model.inputs)


def time_steps(keras_model) -> int | None:
    """The fixed time length of the model's first input (None: free)."""
    shape = keras_model.inputs[0].shape
    return shape[1] if len(shape) >= 2 and isinstance(shape[1], int) else None


def recorded_layers(proto, keras_model) -> list[tuple[str, str]]:
    """(Keras layer, ONNX tensor) pairs recorded at export (``edgeattn.layer_outputs``) that both sides still
    have: a tensor the graph computes and does not output already, once each, and a layer of ``keras_model``
    whose output can be compared (``layer_outputs``); in the recorded order."""
    import json

    from edgeattn.graphs.onnxfile import LAYER_OUTPUTS_KEY

    meta = {p.key: p.value for p in proto.metadata_props}

    recorded = json.loads(meta.get(LAYER_OUTPUTS_KEY, "[]"))
    # tensors the graph computes and does not output already, once each: they become extra outputs in order
    taken = {o.name for o in proto.graph.output}
    produced = {o for node in proto.graph.node for o in node.output} - taken
    comparable = {name for name, _ in layer_outputs(keras_model)}
    found = {}
    for name, tensor in recorded:
        if tensor in produced and name in comparable:
            found.setdefault(tensor, name)
    return [(name, tensor) for tensor, name in found.items()]
