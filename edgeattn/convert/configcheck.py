"""The check of a model config, read as data (``edgeattn.convert.modelconfig``), before Keras deserializes any
of it: a recursive walk that refuses anything that could run code.

Every object that names a class is judged against edgeattn's registry of layer classes and of Keras's plain
objects (initializers, regularizers, dtype policies, ...). Lambda layers, unknown classes, configs that name
modules or functions other than Keras's, TF-op layers calling anything but a pure tensor function
(``edgeattn.convert.tfops``), a ``TextVectorization`` with a callable or a file (``edgeattn.convert.textdata``),
and any value that names a file to read are refused, each by its layer's name. Classes of the user's own layer
code (``custom``) are let through, while the Keras objects nested in their configs are still checked.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from edgeattn.convert import legacy, tfops
from edgeattn.core.errors import UnsafeModelError

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
        from edgeattn.convert.textdata import config_problem

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
