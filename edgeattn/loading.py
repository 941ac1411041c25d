"""Safe loading of Keras models: ``.keras`` (Keras 3), ``.h5`` (Keras 3 and Keras 2 era) and Keras 2
SavedModel folders that record their Keras config (``edgeattn.savedmodel``).

Nothing from the file is deserialized before its whole config has been read as data (JSON from the ``.keras``
zip or from the ``model_config`` attribute of the ``.h5``) and checked, recursively, against edgeattn's
registry of layer classes. Compile settings (``compile_config``, ``training_config``: loss, optimizer,
metrics) are dropped before the check: export needs none of them. Lambda layers, unknown classes and configs that name arbitrary modules or functions
are refused by name unless the caller passes ``unsafe=True``. Classes from the user's own layer code
(``custom_layers``, see ``edgeattn.custom_layers``) are known too. Legacy (Keras 2) configs are rewritten for
Keras 3 (``edgeattn.legacy``) and the weights loaded by Keras's own HDF5 reader; ``tf_keras`` is never used.
"""

from __future__ import annotations

import json
import os
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from edgeattn import defaults, files, legacy, params, sandbox, savedmodel, tfops
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
    TextVectorization
    """.split()
)
EDGEATTN_LAYERS = frozenset({"Attention", "NadarayaWatson", "TFOp"})
LAYER_REGISTRY = KERAS_LAYERS | EDGEATTN_LAYERS

# Objects other than layers that may appear in configs (initializers, regularizers, constraints, dtype
# policies, optimizers, losses and metrics). In Keras 3 configs these carry a ``module`` that must be Keras's;
# legacy configs name them bare, so they must be in this list.
KNOWN_OBJECTS = frozenset(
    """
    GlorotUniform GlorotNormal HeUniform HeNormal LecunUniform LecunNormal Orthogonal OrthogonalInitializer
    Zeros Ones Constant Identity IdentityInitializer RandomNormal RandomUniform TruncatedNormal VarianceScaling
    STFT STFTInitializer glorot_uniform glorot_normal he_uniform he_normal lecun_uniform lecun_normal
    orthogonal zeros ones constant identity random_normal random_uniform truncated_normal variance_scaling
    L1 L2 L1L2 OrthogonalRegularizer MaxNorm MinMaxNorm NonNeg UnitNorm RadialConstraint
    DTypePolicy Policy FloatDTypePolicy QuantizedDTypePolicy QuantizedFloat8DTypePolicy Int4DTypePolicy
    DTypePolicyMap SeedGenerator
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
# Beside a model's class_name: how it was trained, which inference never needs (and which may name classes of
# packages the user no longer has, such as a tensorflow_addons loss).
COMPILE_KEYS = ("compile_config", "training_config")
SOURCE_HINT = "give a .keras or .h5 file, or a SavedModel folder (saved_model.pb, variables/)"


@dataclass
class ModelConfig:
    """A model file's config, read as data, not yet deserialized."""

    path: Path  # the user's file, as named in messages and metadata
    format: str  # "keras", "h5" or "savedmodel" (a Keras 2 SavedModel folder with its Keras config)
    config: dict
    keras_version: str | None
    layer_classes: list[str] = field(default_factory=list)
    data: Path | None = None  # the bytes that were checked: the private copy that Keras then builds from
    sha256: str | None = None  # of that copy (a folder: over its files), as the export records it

    @property
    def legacy(self) -> bool:
        return bool(self.keras_version) and self.keras_version.split(".")[0] in {"1", "2"}

    @property
    def path_taken(self) -> str:
        """How the file was read, as the ONNX metadata (``edgeattn.source_format``) and ``inspect`` say it:
        ``keras``/``h5`` (Keras 3), ``keras-keras2``/``h5-keras2`` (a Keras 2 config rewritten for Keras 3),
        ``savedmodel-keras`` (a Keras 2 SavedModel built from its Keras metadata and checkpoint)."""
        if self.format == "savedmodel":
            return "savedmodel-keras"
        return f"{self.format}-keras2" if self.legacy else self.format


def require_source(path: str | os.PathLike) -> Path:
    """``path`` as a Path if it is a model file or a SavedModel folder; else one clear InputError."""
    path = Path(path)
    if path.is_dir() and not savedmodel.is_savedmodel(path):
        raise InputError(
            f"{path} is a folder without {savedmodel.SAVED_MODEL}: not a SavedModel", hint=SOURCE_HINT
        )
    return path if path.is_dir() else require_file(path, "a model file", hint=SOURCE_HINT)


def read_config(path: str | os.PathLike, contain: bool = True, *, shown: Path | None = None) -> ModelConfig:
    """Read the model config of a ``.keras`` or ``.h5`` file, or of a SavedModel folder's Keras metadata, as
    JSON, running nothing.

    With ``contain`` (and unless ``EDGEATTN_CONTAIN=0``), the file is parsed in a child process first, with
    a time and memory limit (see ``edgeattn.sandbox``). ``shown``: the name to use in messages and in
    ``ModelConfig.path`` when ``path`` is a private copy of the user's file.
    """
    path = require_source(path)
    shown = shown or path
    if path.is_dir():
        if contain and sandbox.enabled():
            reply = sandbox.parse("model", path, shown=shown)
            return ModelConfig(shown, reply["format"], reply["config"], reply["keras_version"], data=path)
        return _read_savedmodel(path, shown)
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


def _read_savedmodel(data: Path, path: Path) -> ModelConfig:
    config = savedmodel.keras_config(savedmodel.read_metadata(data, shown=path))
    if config is None:
        raise UnsupportedModelError(
            f"{path} is a SavedModel whose {savedmodel.KERAS_METADATA} records no Keras layers config "
            "(a subclassed model or a tf.Module)",
            hint="edgeattn export converts such a folder from its serving signature's graph",
        )
    # keras_metadata.pb is written by Keras 2 (tf.keras) only
    return ModelConfig(path, "savedmodel", _as_dict(path, config), "2", data=data)


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
    return without_compile_settings(config)


def without_compile_settings(node):
    """A copy of a config without the compile settings recorded beside any model's ``class_name``."""
    if isinstance(node, list):
        return [without_compile_settings(item) for item in node]
    if not isinstance(node, dict):
        return node
    drop = COMPILE_KEYS if "class_name" in node else ()
    return {k: without_compile_settings(v) for k, v in node.items() if k not in drop}


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
        if _is_custom(node, cls, custom):
            if is_layer:
                found.append(cls)
            # the user's own class: its arguments are its own, but Keras objects nested in them are checked
        else:
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
        named = _names_a_file(key, value)
        if named:
            problems.append(
                Refusal(f"{where}: its {key!r} {named}; edgeattn reads no file a config points to")
            )
            continue
        # a Keras 2.0-2.1 Sequential's config is its bare list of layers
        holds_layers = key in LAYER_KEYS or (
            key == "config" and cls == "Sequential" and isinstance(value, list)
        )
        _walk(value, holds_layers, where, found, problems, custom)


# Config keys whose string value is a file to read (StringLookup's and TextVectorization's vocabulary,
# TFSMLayer's filepath, ...). A value of any key that is a path (absolute, home, relative with ./ or ../, a
# Windows drive) is refused too.
FILE_KEYS = frozenset(
    {"filepath", "file_path", "path", "filename", "file", "vocabulary", "vocabulary_path", "vocab_file",
     "vocabulary_file", "idf_weights", "checkpoint", "directory", "saved_model", "weights_file"}
)  # fmt: skip
PATH_LIKE = re.compile(r"^(/|~|\.{1,2}[/\\]|[A-Za-z]:[/\\]|\\\\)")


def _names_a_file(key: str, value) -> str | None:
    """How the config value names a file (for the refusal), or None."""
    if not isinstance(value, str) or not value:
        return None
    if key in FILE_KEYS:
        return f"names the file {value!r}"
    if len(value) > 1 and PATH_LIKE.match(value):
        return f"is the path {value!r}"
    return None


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
    if cls == "TextVectorization" and is_layer:  # its settings: data only, no callable, no file
        from edgeattn.textmodel import config_problem

        if config_problem(node.get("config")):
            return config_problem(node.get("config")), None
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
    if cls not in KNOWN_OBJECTS and cls not in LAYER_REGISTRY:
        # whatever its module: a Keras layer such as TFSMLayer given as an activation is refused too
        return f"{cls} is not a Keras object edgeattn knows", None
    return None


FREE_AXES = ("batch", "time")  # names of free axes in --input-spec (any other name is free too)
DTYPES = ("float32", "float16", "float64", "int32", "int64", "bool")


@dataclass(frozen=True)
class InputShape:
    """One input of a model that records none (``--input-spec "x:float32[batch,10,1]"``); free axes are None."""

    name: str
    dtype: str
    shape: tuple


def parse_input_spec(text: str) -> InputShape:
    """``NAME:DTYPE[D0,D1,...]`` with whole numbers for fixed axes and names (``batch``, ``time``) for free
    ones; the first axis is the batch, named (the export keeps it free). ``DTYPE`` defaults to float32
    (``x[batch,10,1]``)."""
    found = re.fullmatch(r"\s*([A-Za-z_][\w./-]*)\s*(?::\s*(\w+))?\s*\[([^\]]*)\]\s*", text)
    if not found:
        raise InputError(
            f"--input-spec {text!r}: expected NAME:DTYPE[AXES], e.g. x:float32[batch,10,1]",
            hint="axes are whole numbers, or names (batch, time) for free axes",
        )
    name, dtype, axes = found.group(1), found.group(2) or "float32", found.group(3)
    if dtype not in DTYPES:
        raise InputError(f"--input-spec {text!r}: dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    dims = [a.strip() for a in axes.split(",")] if axes.strip() else []
    if not dims or any(not re.fullmatch(r"[0-9]+|[A-Za-z_][A-Za-z0-9_]*", d) for d in dims):
        raise InputError(
            f"--input-spec {text!r}: each axis is a whole number or a name such as batch or time"
        )
    if dims[0].isdigit():
        raise InputError(
            f"--input-spec {text!r}: the first axis is the batch, which the export keeps free",
            hint=f"name it: {name}:{dtype}[batch,{','.join(dims[1:])}]",
        )
    return InputShape(name, dtype, (None, *(int(d) if d.isdigit() else None for d in dims[1:])))


def _build_inputs(model, input_shapes: tuple, source: ModelConfig):
    """A model built from a config that records no inputs (a subclassed model): built on ``input_shapes``
    (and wrapped as a functional model, whose inputs the export reads), or an InputError naming what is
    missing."""
    import keras

    try:
        if model.inputs:
            return model
    except (AttributeError, ValueError):
        pass
    if not input_shapes:
        raise InputError(
            f"{source.path} records no input shapes (a subclassed {type(model).__name__} is built by its "
            "first call)",
            hint='give them with --input-spec, e.g. --input-spec "x:float32[batch,10,1]" (once per input)',
        )
    inputs = [keras.Input(batch_shape=s.shape, dtype=s.dtype, name=s.name) for s in input_shapes]
    inputs = inputs[0] if len(inputs) == 1 else inputs
    return keras.Model(inputs, model(inputs), name=model.name)


@dataclass
class LoadedModel:
    model: object  # keras.Model
    source: ModelConfig


def load_model(
    path: str | os.PathLike,
    unsafe: bool = False,
    custom_layers=(),
    input_shapes: tuple = (),
    max_params: int = defaults.MAX_PARAMS,
) -> LoadedModel:
    """Load a Keras model safely (see the module docstring). Raises ``EdgeAttnError`` kinds.

    ``custom_layers``: ``.py`` files or module names holding the user's own layer classes (imported: the
    user names them, so the user trusts them). ``input_shapes``: ``InputShape``s (or ``--input-spec``
    strings) for a model whose file records no inputs; a model that records its own ignores them.
    ``max_params``: a config whose layers imply more parameters than this is refused before Keras builds it
    (``edgeattn.params``), also with ``unsafe``.

    The file is copied once into a private folder: the copy is what is checked and what Keras builds from,
    so a file changed on disk between the check and the build cannot slip anything past the check.
    """
    path = require_source(path)
    shapes = tuple(parse_input_spec(s) if isinstance(s, str) else s for s in input_shapes)
    with files.private_copy(path) as copy:
        source = read_config(copy, shown=path)
        source.sha256 = files.sha256_of(copy)  # of what is checked and built, not of the path read again
        return _load_checked(source, unsafe, custom_layers, shapes, max_params)


def _load_checked(
    source: ModelConfig,
    unsafe: bool,
    custom_layers,
    input_shapes: tuple = (),
    max_params: int = defaults.MAX_PARAMS,
) -> LoadedModel:
    user: dict[str, object] = {}
    if custom_layers:
        require("tensorflow", "export")
        from edgeattn.custom_layers import import_layers

        user = import_layers(custom_layers)
    source.layer_classes = check_config(source.config, unsafe=unsafe, custom=frozenset(user))
    params.check(source.config, max_params, source.path)
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
        if source.format == "keras" and source.legacy:
            model = _load_keras2_zip(source, custom, unsafe, input_shapes)
        elif source.format == "keras":
            model = keras.saving.load_model(
                source.data, compile=False, safe_mode=not unsafe, custom_objects=custom
            )
            model = _build_inputs(model, input_shapes, source)
        elif source.format == "savedmodel":
            model = _load_savedmodel(source, custom, unsafe, input_shapes)
        else:
            model = _load_h5(source, custom, unsafe, input_shapes)
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


def _build_legacy(source: ModelConfig, custom: dict, unsafe: bool, input_shapes: tuple = ()):
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
        return model, rewritten, _build_inputs(model, input_shapes, source)


def _load_keras2_zip(source: ModelConfig, custom: dict, unsafe: bool, input_shapes: tuple = ()):
    """A ``.keras`` written by tf.keras 2.13-2.15: its checked config built as a Keras 2 config (Keras 3
    cannot import its ``keras.src.engine`` modules), then its ``model.weights.h5`` read by Keras 3, which
    names the layers' weights as tf.keras did (``layers/lstm/cell/vars/0``)."""
    model, _, built = _build_legacy(source, custom, unsafe, input_shapes)
    weights = Path(source.data).parent / "model.weights.h5"
    with zipfile.ZipFile(source.data) as zf:
        if "model.weights.h5" not in zf.namelist():
            raise InputError(f"{source.path} holds no model.weights.h5")
        weights.write_bytes(zf.read("model.weights.h5"))
    model.load_weights(weights)
    return built


def _load_savedmodel(source: ModelConfig, custom: dict, unsafe: bool, input_shapes: tuple = ()):
    """A Keras 2 SavedModel: built from its checked config, weights set from the checkpoint's arrays."""
    from edgeattn.layers import Attention

    model, rewritten, built = _build_legacy(source, custom, unsafe, input_shapes)
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


def _load_h5(source: ModelConfig, custom: dict, unsafe: bool, input_shapes: tuple = ()):
    import h5py
    from keras.src.legacy.saving import legacy_h5_format, saving_options
    from keras.src.saving import serialization_lib

    model, rewritten, built = _build_legacy(source, custom, unsafe, input_shapes)
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
    from edgeattn.layers import Attention

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
