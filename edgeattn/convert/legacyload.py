"""Keras 2-era files built by Keras 3: an ``.h5`` saved by Keras 2, a ``.keras`` written by tf.keras
2.13-2.15, and a Keras 2 SavedModel folder with its Keras config (``edgeattn.convert.savedmodel``).

The checked config is rewritten for Keras 3 (``edgeattn.convert.legacy``) and built in Keras's safe mode,
then the stored weights are set: by Keras's own HDF5 reader by layer name, CuDNN layers' weights converted
(``legacy.cudnn_weights``), and the ``attention`` package's Attention layers' kernels by the sub-layer each
stored name gives. ``tf_keras`` is never used.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from edgeattn.convert import legacy, savedmodel
from edgeattn.convert.inputspec import build_inputs
from edgeattn.convert.modelconfig import ModelConfig
from edgeattn.core.errors import InputError, UnsupportedModelError


class _Without:
    """A model as Keras's by-name weight loader sees it, less some layers (whose weights edgeattn converts)."""

    def __init__(self, model, names) -> None:
        self._model = model
        self.layers = [layer for layer in model.layers if layer.name not in names]

    def __getattr__(self, name: str):
        return getattr(self._model, name)


def build_legacy(source: ModelConfig, custom: dict, unsafe: bool, input_shapes: tuple = ()):
    """The model a Keras 2-era config describes, built by Keras 3 (safe mode) after ``legacy.rewrite``: (the
    model, whose layers take the stored weights; the rewrite; the model to export, which is the same model or,
    for one that records no inputs, a functional model around it built on ``input_shapes``)."""
    from keras.src.legacy.saving import saving_options, saving_utils
    from keras.src.saving import serialization_lib

    try:
        internal = {"hard_sigmoid_keras2", *legacy.TF_OP_LAYERS}  # edgeattn's own stand-ins, not the user's
        rewritten = legacy.rewrite(source.config, user_classes=frozenset(custom) - internal)
    except ValueError as exc:
        raise UnsupportedModelError(f"{source.path}: {exc}") from None
    legacy_scope = saving_options.keras_option_scope(use_legacy_config=True)
    with legacy_scope, serialization_lib.SafeModeScope(not unsafe):
        model = saving_utils.model_from_config(rewritten.config, custom_objects=custom)
        return model, rewritten, build_inputs(model, input_shapes, source)


def load_keras2_zip(source: ModelConfig, custom: dict, unsafe: bool, input_shapes: tuple = ()):
    """A ``.keras`` written by tf.keras 2.13-2.15: its checked config built as a Keras 2 config (Keras 3
    cannot import its ``keras.src.engine`` modules), then its ``model.weights.h5`` read by Keras 3, which
    names the layers' weights as tf.keras did (``layers/lstm/cell/vars/0``)."""
    model, _, built = build_legacy(source, custom, unsafe, input_shapes)
    weights = Path(source.data).parent / "model.weights.h5"
    with zipfile.ZipFile(source.data) as zf:
        if "model.weights.h5" not in zf.namelist():
            raise InputError(f"{source.path} holds no model.weights.h5")
        weights.write_bytes(zf.read("model.weights.h5"))
    model.load_weights(weights)
    return built


def load_savedmodel(source: ModelConfig, custom: dict, unsafe: bool, input_shapes: tuple = ()):
    """A Keras 2 SavedModel: built from its checked config, weights set from the checkpoint's arrays."""
    from edgeattn.convert.layers import Attention

    model, rewritten, built = build_legacy(source, custom, unsafe, input_shapes)
    nodes = savedmodel.read_metadata(source.data, shown=source.path)
    stored = savedmodel.layer_weights(source.data, nodes, shown=source.path)
    for layer in model.layers:
        if not layer.weights:
            continue
        if layer.name not in stored:
            raise UnsupportedModelError(f"{source.path} holds no weights for the layer {layer.name!r}")
        pairs = stored[layer.name]
        if isinstance(layer, Attention):
            _set_attention_weights(layer, pairs)
            continue
        values = [array for _, array in pairs]
        if layer.name in rewritten.cudnn:
            values = legacy.cudnn_weights(rewritten.cudnn[layer.name], values)
        expected = [tuple(w.shape) for w in layer.weights]
        if [tuple(v.shape) for v in values] != expected:
            raise UnsupportedModelError(
                f"{source.path}: layer {layer.name!r} expects weights of shapes {expected}, the checkpoint "
                f"holds {[tuple(v.shape) for v in values]} ({', '.join(p for p, _ in pairs)})"
            )
        layer.set_weights(values)
    return built


def load_h5(source: ModelConfig, custom: dict, unsafe: bool, input_shapes: tuple = ()):
    import h5py
    from keras.src.legacy.saving import legacy_h5_format, saving_options
    from keras.src.saving import serialization_lib

    model, rewritten, built = build_legacy(source, custom, unsafe, input_shapes)
    with h5py.File(source.data, "r") as f:
        legacy_scope = saving_options.keras_option_scope(use_legacy_config=True)
        with legacy_scope, serialization_lib.SafeModeScope(not unsafe):
            weights = legacy_h5_format.safe_get_h5_group(f, "model_weights")
            stored = {
                name
                for name in legacy_h5_format.load_attributes_from_hdf5_group(weights, "layer_names")
                if legacy_h5_format.load_attributes_from_hdf5_group(weights[name], "weight_names")
            }
            missing = [layer.name for layer in model.layers if layer.weights and layer.name not in stored]
            if missing:
                raise UnsupportedModelError(f"{source.path} holds no weights for the layer {missing[0]!r}")
            # CuDNN layers' weights are converted here; Keras loads the rest by layer name.
            legacy_h5_format.load_weights_from_hdf5_group_by_name(weights, _Without(model, rewritten.cudnn))
            for name, kinds in rewritten.cudnn.items():
                values = legacy_h5_format.load_subset_weights_from_hdf5_group(weights[name])
                model.get_layer(name).set_weights(legacy.cudnn_weights(kinds, values))
            _attention_weights_by_name(weights, model)
    return built


# The ``attention`` package 4.1 named the Luong matrix ``attention_score_vec``; 5.0.0 calls it ``luong_w``.
# A SavedModel's checkpoint names sub-layers by their Python attribute: 5.0.0 keeps ``attention_vector`` as ``w_c``.
SUBLAYER_ALIASES = {"attention_score_vec": "luong_w", "w_c": "attention_vector"}


def _attention_weights_by_name(group, model) -> None:
    """Set each Attention layer's kernels by their stored sub-layer names, not by their order in the file."""
    from edgeattn.convert.layers import Attention

    for layer in model.layers:
        if not isinstance(layer, Attention) or layer.name not in group:
            continue
        stored = group[layer.name]
        names = [
            n.decode("utf-8") if hasattr(n, "decode") else str(n)
            for n in stored.attrs.get("weight_names", [])
        ]
        _set_attention_weights(layer, [(name, stored[name][()]) for name in names])


def _set_attention_weights(layer, pairs: list) -> None:
    """Set an Attention layer's kernels from (stored path, array) pairs by the sub-layer each path names."""
    for name, value in pairs:
        parts = name.replace(":0", "").split("/")
        sub = SUBLAYER_ALIASES.get(parts[-2], parts[-2]) if len(parts) >= 2 else ""
        target = getattr(layer, sub, None)
        if target is None or tuple(target.kernel.shape) != value.shape:
            raise UnsupportedModelError(
                f"Attention layer {layer.name!r}: the stored weight {name!r} {value.shape} has no "
                f"matching sub-layer (expected {[w.path for w in layer.weights]})"
            )
        target.kernel.assign(value)
