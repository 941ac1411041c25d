"""Safe loading of Keras models: ``.keras`` (Keras 3), ``.h5`` (Keras 3 and Keras 2 era) and Keras 2
SavedModel folders that record their Keras config (``edgeattn.convert.savedmodel``).

Nothing from the file is deserialized before its whole config has been read as data (JSON from the ``.keras``
zip or from the ``model_config`` attribute of the ``.h5``: ``edgeattn.convert.modelconfig``) and checked,
recursively, against edgeattn's registry of layer classes (``edgeattn.convert.configcheck``). Compile settings
(``compile_config``, ``training_config``: loss, optimizer, metrics) are dropped before the check: export needs
none of them. Lambda layers, unknown classes and configs that name arbitrary modules or functions are refused by
name unless the caller passes ``unsafe=True``. Classes from the user's own layer code (``custom_layers``, see
``edgeattn.convert.custom_layers``) are known too. Legacy (Keras 2) configs are rewritten for Keras 3
(``edgeattn.convert.legacy``) and the weights loaded by Keras's own HDF5 reader
(``edgeattn.convert.legacyload``); ``tf_keras`` is never used. A model that records no inputs is built on the
caller's ``--input-spec`` (``edgeattn.convert.inputspec``).

Here: ``load_model``, the flow from the user's path to a built Keras model. The names of the modules above that
callers have always found here are imported back.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from edgeattn.convert import legacy, params, savedmodel  # noqa: F401 - savedmodel: as loading.savedmodel
from edgeattn.convert.configcheck import (
    check_config,
)
from edgeattn.convert.inputspec import InputShape, build_inputs, parse_input_spec  # noqa: F401
from edgeattn.convert.legacyload import load_h5, load_keras2_zip, load_savedmodel
from edgeattn.convert.modelconfig import (  # noqa: F401
    ModelConfig,
    read_config,
    require_source,
    without_compile_settings,
)
from edgeattn.core import defaults, files
from edgeattn.core.errors import EdgeAttnError, UnsupportedModelError, first_line, require


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
    (``edgeattn.convert.params``), also with ``unsafe``.

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
        from edgeattn.convert.custom_layers import import_layers

        user = import_layers(custom_layers)
    source.layer_classes = check_config(source.config, unsafe=unsafe, custom=frozenset(user))
    params.check(source.config, max_params, source.path)
    require("tensorflow", "export")
    import keras

    from edgeattn.convert.layers import TFOp, hard_sigmoid_keras2

    custom = {
        "hard_sigmoid_keras2": hard_sigmoid_keras2,
        **{name: TFOp for name in legacy.TF_OP_LAYERS},
        **user,
        **_registered_aliases(source.config, user),
    }
    try:
        if source.format == "keras" and source.legacy:
            model = load_keras2_zip(source, custom, unsafe, input_shapes)
        elif source.format == "keras":
            model = keras.saving.load_model(
                source.data, compile=False, safe_mode=not unsafe, custom_objects=custom
            )
            model = build_inputs(model, input_shapes, source)
        elif source.format == "savedmodel":
            model = load_savedmodel(source, custom, unsafe, input_shapes)
        else:
            model = load_h5(source, custom, unsafe, input_shapes)
    except EdgeAttnError:
        raise
    except Exception as exc:
        raise UnsupportedModelError(
            f"{source.path}: Keras could not build the model: {first_line(exc)}", hint=_build_hint(exc, user)
        ) from exc
    if not isinstance(model, keras.Model):
        raise UnsupportedModelError(f"{source.path} holds a {type(model).__name__}, not a Keras model")
    return LoadedModel(model=model, source=source)


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
