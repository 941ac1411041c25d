"""Safe loading of Keras models: ``.keras`` (Keras 3) and ``.h5`` (Keras 3 and Keras 2 era).

Nothing from the file is deserialized before its whole config has been read as data (JSON from the ``.keras``
zip or from the ``model_config`` attribute of the ``.h5``) and checked, recursively, against edgeattn's
registry of layer classes. Lambda layers, unknown classes and configs that name arbitrary modules or functions
are refused by name unless the caller passes ``unsafe=True``. Classes from the user's own layer code
(``custom_layers``, see ``edgeattn.custom_layers``) are known too. Legacy (Keras 2) configs are rewritten for
Keras 3 (``edgeattn.legacy``) and the weights loaded by Keras's own HDF5 reader; ``tf_keras`` is never used.
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from edgeattn import files, legacy, sandbox, tfops
from edgeattn.errors import (
    EdgeAttnError,
    InputError,
    UnsafeModelError,
    UnsupportedModelError,
    first_line,
    require,
    require_file,
)

# Keras layer classes that edgeattn loads and exports. Anything else is refused unless --unsafe.
KERAS_LAYERS = frozenset(
    """
    InputLayer Dense LSTM GRU SimpleRNN Bidirectional TimeDistributed Dropout SpatialDropout1D GaussianNoise
    GaussianDropout AlphaDropout Embedding Masking Activation Concatenate Add Subtract Multiply Average Maximum
    Minimum Flatten Reshape Permute RepeatVector LayerNormalization BatchNormalization Conv1D MaxPooling1D
    AveragePooling1D GlobalAveragePooling1D GlobalMaxPooling1D ReLU LeakyReLU PReLU ELU Softmax Dot Cropping1D
    ZeroPadding1D UpSampling1D Functional Sequential Model Attention AdditiveAttention MultiHeadAttention
    EinsumDense Identity UnitNormalization GroupNormalization ActivityRegularization CuDNNLSTM CuDNNGRU
    TFOpLambda SlicingOpLambda
    """.split()
)
EDGEATTN_LAYERS = frozenset({"Attention", "NadarayaWatson", "TFOp"})
LAYER_REGISTRY = KERAS_LAYERS | EDGEATTN_LAYERS

# Objects other than layers that may appear in configs (initializers, regularizers, constraints, dtype
# policies, optimizers, losses and metrics). In Keras 3 configs these carry a ``module`` that must be Keras's;
# legacy configs name them bare, so they must be in this list.
KNOWN_OBJECTS = frozenset(
    """
    GlorotUniform GlorotNormal HeUniform HeNormal LecunUniform LecunNormal Orthogonal Zeros Ones Constant
    Identity IdentityInitializer RandomNormal RandomUniform TruncatedNormal VarianceScaling L1 L2 L1L2
    OrthogonalRegularizer MaxNorm MinMaxNorm NonNeg UnitNorm DTypePolicy Policy FloatDTypePolicy
    Adam AdamW SGD RMSprop Adagrad Adadelta Adamax Nadam Ftrl Lion
    MeanSquaredError MeanAbsoluteError BinaryCrossentropy CategoricalCrossentropy
    SparseCategoricalCrossentropy Huber MeanSquaredLogarithmicError LogCosh
    Mean MeanMetricWrapper Accuracy BinaryAccuracy CategoricalAccuracy SparseCategoricalAccuracy
    """.split()
)
# Markers Keras 3 uses for plain data inside configs.
DATA_MARKERS = frozenset(
    {"__keras_tensor__", "__slice__", "__tuple__", "__numpy__", "__tensor__", "__ellipsis__"}
)
# ``{"class_name": "function", "module": M, "config": NAME}`` may name functions of these modules only.
FUNCTION_MODULES = (
    "keras.activations",
    "keras.src.activations",
    "keras.losses",
    "keras.src.losses",
    "keras.metrics",
    "keras.src.metrics",
)
# Keras op classes (``keras.src.ops.*``, e.g. ``GetItem`` for ``x[:, -1]``) are plain tensor operations.
KERAS_OP_MODULE = "keras.src.ops."
LAYER_KEYS = ("layers", "layer", "forward_layer", "backward_layer", "cell", "cells")


@dataclass
class ModelConfig:
    """A model file's config, read as data, not yet deserialized."""

    path: Path  # the user's file, as named in messages and metadata
    format: str  # "keras" or "h5"
    config: dict
    keras_version: str | None
    layer_classes: list[str] = field(default_factory=list)
    data: Path | None = None  # the bytes that were checked: the private copy that Keras then builds from

    @property
    def legacy(self) -> bool:
        return bool(self.keras_version) and self.keras_version.split(".")[0] in {"1", "2"}


def read_config(path: str | os.PathLike, contain: bool = True, *, shown: Path | None = None) -> ModelConfig:
    """Read the model config of a ``.keras`` or ``.h5`` file as JSON, running nothing.

    With ``contain`` (and unless ``EDGEATTN_CONTAIN=0``), the file is parsed in a child process first, with
    a time and memory limit (see ``edgeattn.sandbox``). ``shown``: the name to use in messages and in
    ``ModelConfig.path`` when ``path`` is a private copy of the user's file.
    """
    path = require_file(path, "a model file", hint="give a .keras or .h5 file")
    shown = shown or path
    with open(path, "rb") as fh:
        head = fh.read(8)
    if head.startswith(b"PK") or head == b"\x89HDF\r\n\x1a\n":
        if contain and sandbox.enabled():
            reply = sandbox.parse("model", path, shown=shown)
            config = ModelConfig(shown, reply["format"], reply["config"], reply["keras_version"])
        elif head.startswith(b"PK"):
            config = _read_keras_zip(path, shown)
        else:
            config = _read_h5(path, shown)
        config.data = path
        return config
    raise InputError(
        f"{shown} is neither a .keras (zip) nor an .h5 (HDF5) model file",
        hint="edgeattn reads Keras models saved with model.save('model.keras') or model.save('model.h5')",
    )


def _read_keras_zip(data: Path, path: Path) -> ModelConfig:
    try:
        with zipfile.ZipFile(data) as zf:
            names = set(zf.namelist())
            if "config.json" not in names:
                raise InputError(f"{path} is a zip file without config.json: not a .keras model")
            config = json.loads(zf.read("config.json"))
            meta = json.loads(zf.read("metadata.json")) if "metadata.json" in names else {}
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise InputError(f"{path} is damaged or truncated: {exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: config.json is not valid JSON: {exc}") from None
    return ModelConfig(path, "keras", _as_dict(path, config), meta.get("keras_version"))


def _read_h5(data: Path, path: Path) -> ModelConfig:
    h5py = require("h5py", "export")
    try:
        with h5py.File(data, "r") as f:
            raw = f.attrs.get("model_config")
            version = f.attrs.get("keras_version")
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(f"{path} is damaged or truncated: {exc}") from None
    if raw is None:
        raise InputError(
            f"{path} holds no model_config: it is a weights-only file, not a model",
            hint="save the whole model with model.save('model.h5')",
        )
    if hasattr(raw, "decode"):
        raw = raw.decode("utf-8")
    if hasattr(version, "decode"):
        version = version.decode("utf-8")
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: model_config is not valid JSON: {exc}") from None
    return ModelConfig(path, "h5", _as_dict(path, config), str(version) if version is not None else None)


def _as_dict(path: Path, config) -> dict:
    if not isinstance(config, dict) or "class_name" not in config:
        raise InputError(f"{path}: the model config is not a Keras model config")
    return config


def check_config(config: dict, unsafe: bool = False, custom: frozenset[str] = frozenset()) -> list[str]:
    """Walk a model config and refuse anything that could run code. Returns the layer classes found.

    ``custom``: class names (bare or ``Package>Name``) of the user's own layer code, which may appear.
    Raises ``UnsafeModelError`` listing every refused layer and why (unless ``unsafe``).
    """
    found: list[str] = []
    problems: list[Refusal] = []
    _walk(config, is_layer=True, where="model", found=found, problems=problems, custom=custom)
    if problems and not unsafe:
        raise UnsafeModelError(
            f"refused to load: {problems[0].text}"
            if len(problems) == 1
            else f"refused to load {len(problems)} layers of the file (nothing from it was run):",
            details=[p.text for p in problems] if len(problems) > 1 else [],
            hint=_hint(problems),
        )
    return found


@dataclass(frozen=True)
class Refusal:
    text: str
    custom_class: str | None = None  # a class the user's own layer code could supply


def _hint(problems: list[Refusal]) -> str:
    classes = sorted({p.custom_class for p in problems if p.custom_class})
    if classes:
        holding = ", ".join(repr(c) for c in classes)
        return (
            f"pass --custom-layers FILE.py holding class {holding} (the layer code you trust); "
            "code inside the model file is never run"
        )
    return "nothing from the file was run; pass --unsafe only if you trust the file and its author"


def _walk(node, is_layer: bool, where: str, found: list[str], problems: list, custom: frozenset) -> None:
    if isinstance(node, list):
        for item in node:
            _walk(item, is_layer, where, found, problems, custom)
        return
    if not isinstance(node, dict):
        return
    cls = node.get("class_name")
    if isinstance(cls, str):
        cfg = node.get("config")
        name = node.get("name") or (cfg.get("name") if isinstance(cfg, dict) else None)
        label = f"{cls} layer {name!r}" if name else f"{cls}"
        if is_layer and _is_custom(node, cls, custom):
            found.append(cls)
            return  # the user's own class: its config is its own business
        problem = _judge(node, cls, is_layer)
        if problem:
            problems.append(Refusal(f"{label} in {where}: {problem[0]}", problem[1]))
            return  # what lies inside a refused object is refused with it
        if is_layer:
            found.append(cls)
        where = f"{cls} {name!r}" if (is_layer and name) else where
    for key, value in node.items():
        if key in ("module", "registered_name", "class_name"):
            continue
        _walk(value, key in LAYER_KEYS, where, found, problems, custom)


def _is_custom(node: dict, cls: str, custom: frozenset) -> bool:
    """Whether the user's layer code has this class: by its class name, its registered name, or the bare
    name (a file recorded ``Custom>Name`` while the user's copy of the class is not registered)."""
    if not custom or cls in {"Lambda", "__lambda__", "function"}:
        return False
    names = {cls, node.get("registered_name")}
    return any(isinstance(n, str) and (n in custom or n.split(">")[-1] in custom) for n in names)


def _registered_aliases(config, user: dict) -> dict:
    """``Package>Name`` entries the file records for classes the user's code has under the bare name only."""
    aliases = {}
    if isinstance(config, dict):
        for name in (config.get("class_name"), config.get("registered_name")):
            if isinstance(name, str) and ">" in name and name not in user and name.split(">")[-1] in user:
                aliases[name] = user[name.split(">")[-1]]
        for value in config.values():
            aliases.update(_registered_aliases(value, user))
    elif isinstance(config, list):
        for value in config:
            aliases.update(_registered_aliases(value, user))
    return aliases


def _judge(node: dict, cls: str, is_layer: bool) -> tuple[str, str | None] | None:
    """Why this config object must not be deserialized (and the class the user's own code could supply),
    or None when it is safe."""
    module = node.get("module")
    registered = node.get("registered_name")
    bare = cls.split(">", 1)[-1]
    if cls.startswith("edgeattn>"):  # Keras 3 .h5 configs name registered classes "package>Class"
        cls = bare
        if cls not in EDGEATTN_LAYERS:
            return f"edgeattn>{cls} is not a class edgeattn has", None
    if cls in DATA_MARKERS:
        return None
    if cls in {"Lambda", "__lambda__"}:
        return "a Lambda layer holds Python code", None
    if cls == "function":
        fn = node.get("config")
        if isinstance(module, str) and module.startswith(FUNCTION_MODULES) and isinstance(fn, str):
            return None
        return f"names the function {module}.{fn}, which is not a Keras activation, loss or metric", None
    if cls in legacy.TF_OP_LAYERS:
        function = (node.get("config") or {}).get("function")
        if isinstance(function, str) and tfops.known(function):
            return None
        return f"calls tf.{function}, which is not in edgeattn's list of pure tensor functions", None
    if isinstance(module, str) and not (module == "keras" or module.startswith("keras.")):
        if cls in EDGEATTN_LAYERS and (
            registered in (None, f"edgeattn>{cls}") or module.startswith("edgeattn")
        ):
            return None
        return f"names the module {module!r}, which is not Keras (edgeattn runs no outside code)", bare
    if (
        isinstance(registered, str)
        and ">" in registered
        and registered.split(">")[0] not in ("edgeattn", "keras")
    ):
        return f"is registered as {registered!r}, a custom class edgeattn does not know", bare
    if ">" in cls:
        return f"is registered as {cls!r}, a custom class edgeattn does not know", bare
    if is_layer:
        if cls in LAYER_REGISTRY:
            return None
        if isinstance(module, str) and module.startswith(KERAS_OP_MODULE):
            return None
        return f"{cls} is not a layer edgeattn knows (the README lists the supported layers)", cls
    if module is None and cls not in KNOWN_OBJECTS and cls not in LAYER_REGISTRY:
        return f"{cls} is not a Keras object edgeattn knows", None
    return None


@dataclass
class LoadedModel:
    model: object  # keras.Model
    source: ModelConfig


def load_model(path: str | os.PathLike, unsafe: bool = False, custom_layers=()) -> LoadedModel:
    """Load a Keras model safely (see the module docstring). Raises ``EdgeAttnError`` kinds.

    ``custom_layers``: ``.py`` files or module names holding the user's own layer classes (imported: the
    user names them, so the user trusts them).

    The file is copied once into a private folder: the copy is what is checked and what Keras builds from,
    so a file changed on disk between the check and the build cannot slip anything past the check.
    """
    path = require_file(path, "a model file", hint="give a .keras or .h5 file")
    with files.private_copy(path) as copy:
        return _load_checked(read_config(copy, shown=path), unsafe, custom_layers)


def _load_checked(source: ModelConfig, unsafe: bool, custom_layers) -> LoadedModel:
    user: dict[str, object] = {}
    if custom_layers:
        require("tensorflow", "export")
        from edgeattn.custom_layers import import_layers

        user = import_layers(custom_layers)
    source.layer_classes = check_config(source.config, unsafe=unsafe, custom=frozenset(user))
    require("tensorflow", "export")
    import keras

    from edgeattn.layers import TFOp, hard_sigmoid_keras2

    custom = {
        "hard_sigmoid_keras2": hard_sigmoid_keras2,
        **{name: TFOp for name in legacy.TF_OP_LAYERS},
        **user,
        **_registered_aliases(source.config, user),
    }
    try:
        if source.format == "keras":
            model = keras.saving.load_model(
                source.data, compile=False, safe_mode=not unsafe, custom_objects=custom
            )
        else:
            model = _load_h5(source, custom, unsafe)
    except EdgeAttnError:
        raise
    except Exception as exc:
        raise UnsupportedModelError(
            f"{source.path}: Keras could not build the model: {first_line(exc)}", hint=_build_hint(exc, user)
        ) from exc
    if not isinstance(model, keras.Model):
        raise UnsupportedModelError(f"{source.path} holds a {type(model).__name__}, not a Keras model")
    return LoadedModel(model=model, source=source)


class _Without:
    """A model as Keras's by-name weight loader sees it, less some layers (whose weights edgeattn converts)."""

    def __init__(self, model, names) -> None:
        self._model = model
        self.layers = [layer for layer in model.layers if layer.name not in names]

    def __getattr__(self, name: str):
        return getattr(self._model, name)


def _load_h5(source: ModelConfig, custom: dict, unsafe: bool):
    import h5py
    from keras.src.legacy.saving import legacy_h5_format, saving_options, saving_utils
    from keras.src.saving import serialization_lib

    try:
        rewritten = legacy.rewrite(source.config, user_classes=frozenset(custom))
    except ValueError as exc:
        raise UnsupportedModelError(f"{source.path}: {exc}") from None
    with h5py.File(source.data, "r") as f:
        legacy_scope = saving_options.keras_option_scope(use_legacy_config=True)
        with legacy_scope, serialization_lib.SafeModeScope(not unsafe):
            model = saving_utils.model_from_config(rewritten.config, custom_objects=custom)
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
    return model


# The ``attention`` package 4.1 named the Luong matrix ``attention_score_vec``; 5.0.0 calls it ``luong_w``.
SUBLAYER_ALIASES = {"attention_score_vec": "luong_w"}


def _attention_weights_by_name(group, model) -> None:
    """Set each Attention layer's kernels by their stored sub-layer names, not by their order in the file."""
    from edgeattn.layers import Attention

    for layer in model.layers:
        if not isinstance(layer, Attention) or layer.name not in group:
            continue
        stored = group[layer.name]
        for name in stored.attrs.get("weight_names", []):
            name = name.decode("utf-8") if hasattr(name, "decode") else str(name)
            parts = name.split("/")
            sub = SUBLAYER_ALIASES.get(parts[-2], parts[-2]) if len(parts) >= 2 else ""
            target = getattr(layer, sub, None)
            value = stored[name][()]
            if target is None or tuple(target.kernel.shape) != value.shape:
                raise UnsupportedModelError(
                    f"Attention layer {layer.name!r}: the stored weight {name!r} {value.shape} has no "
                    f"matching sub-layer (expected {[w.path for w in layer.weights]})"
                )
            target.kernel.assign(value)


def _build_hint(exc: BaseException, user: dict) -> str:
    """What to try when Keras cannot build a checked config: a class whose config does not fit the Keras
    (or edgeattn) class of that name is often the author's own class of the same name."""
    import re

    found = re.search(r"(?:deserializing class|passed to) '?(\w+)'?", str(exc))
    name = found.group(1) if found else None
    if name and name not in user:
        return (
            f"if {name!r} is the model author's own class, pass --custom-layers FILE.py holding it; "
            "--debug shows the traceback"
        )
    return "run with --debug for the full traceback" + (
        "; a class of --custom-layers may not load under Keras 3" if user else ""
    )
