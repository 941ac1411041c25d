"""Reading a model file's config as data, running nothing: the JSON of a ``.keras`` zip (``config.json``), of an
``.h5`` file's ``model_config`` attribute, or of a Keras 2 SavedModel folder's Keras metadata
(``edgeattn.convert.savedmodel``), parsed in a contained child process unless told otherwise
(``edgeattn.core.sandbox``).

The config comes back as a ``ModelConfig``, with the compile settings (``compile_config``, ``training_config``)
already dropped: export needs none of them, and they may name classes of packages the user no longer has.
Checking the config is ``edgeattn.convert.configcheck``'s part; building it, ``edgeattn.convert.loading``'s.
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from edgeattn.convert import savedmodel
from edgeattn.core import sandbox
from edgeattn.core.errors import InputError, UnsupportedModelError, require, require_file

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
    a time and memory limit (see ``edgeattn.core.sandbox``). ``shown``: the name to use in messages and in
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
