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
