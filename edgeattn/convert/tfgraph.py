"""SavedModel folders without a usable Keras config, converted from the serving signature's graph.

Which folders: a directory holding ``saved_model.pb`` whose Keras metadata (``keras_metadata.pb``, or TF
2.0-2.3's in the object graph) is missing or records no functional/Sequential config with ``layers`` (a subclassed Keras 2 model saved with
``model.save("folder")``, a ``tf.saved_model.save`` of a ``tf.Module``, a Keras 3 ``model.export("folder")``).
``is_graph_savedmodel`` says which; Keras 2 folders with their config take ``edgeattn.convert.savedmodel`` instead.

Loading a SavedModel runs its graph, so the graph is read as data first: ``check_folder`` parses
``saved_model.pb`` in the contained child process and refuses, unless ``--unsafe``, every op that TensorFlow
could run while loading the folder and calling its serving signature and that is not a pure tensor op
(``edgeattn.convert.tfgraphscan``: what is scanned, and why; ``edgeattn.convert.safeops``: the allowlist, and
why each kind of op is refused).

Then the folder is loaded (``tf.saved_model.load``, variables restored), its serving signature (``serving_default``,
or the only one) converted by tf2onnx's ``from_function`` with the signature's input specs (batch axis free), and
the export pipeline (``edgeattn.convert.export``) cleans and checks the graph as for Keras models. The parity reference
(export's check and ``verify --keras FOLDER``) is the SavedModel's own signature run by TensorFlow.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeattn.convert import savedmodel
from edgeattn.convert.tfgraphscan import (  # noqa: F401 - the scan, still found here (sandbox_child, tests)
    check_folder,
    read_saved_model,
    scan,
)
from edgeattn.core.errors import InputError, UnsupportedModelError, require
from edgeattn.graphs.onnxfile import SIGNATURE_OUTPUTS_KEY

SOURCE_FORMAT = "savedmodel-graph"
SIGNATURE_KEY = "edgeattn.signature"


# -- which folders --------------------------------------------------------------------------------------------


def is_graph_savedmodel(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a SavedModel folder that takes the graph path: no Keras metadata, or metadata whose
    root records no functional/Sequential config with ``layers`` (``savedmodel.has_keras_config``). Imports no
    TensorFlow."""
    return savedmodel.is_savedmodel(path) and not savedmodel.has_keras_config(path)


# -- loading and converting -----------------------------------------------------------------------------------


@dataclass
class GraphSource:
    """A loaded SavedModel's serving signature: the parity reference and what tf2onnx converts."""

    folder: Path  # the user's folder, as named in messages and metadata
    signature_name: str
    function: object  # the restored signature (a ConcreteFunction taking keyword arguments)
    input_keys: list[str]  # the signature's argument names
    input_names: list[str]  # the ONNX input names, in the same order (the keys where they are valid names)
    specs: list  # tf.TensorSpec per input, batch axis free
    output_keys: list[str]
    scan: dict
    keep: object = None  # the loaded object: the signature's variables live as long as it does

    def run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The signature run by TensorFlow on ``feed`` (keyed by ONNX input names): arrays by output key."""
        import tensorflow as tf

        args = {key: tf.constant(feed[name]) for key, name in zip(self.input_keys, self.input_names)}
        return {key: np.asarray(value.numpy()) for key, value in self.function(**args).items()}

    def reference(self, order: list[str]):
        """``reference_fn(feed) -> [arrays]`` in ``order`` (output keys): for ``verify.compare``."""
        return lambda feed: [self.run(feed)[key] for key in order]

    @property
    def time_steps(self) -> int | None:
        shape = tuple(self.specs[0].shape)
        return shape[1] if len(shape) >= 2 and isinstance(shape[1], int) else None

    @property
    def time_free(self) -> bool:
        return any(len(s.shape) >= 2 and s.shape[1] is None for s in self.specs)


_NAME_OK = re.compile(r"^[A-Za-z0-9.][A-Za-z0-9_.\\/>-]*$")


def load(folder: str | os.PathLike, found: dict, shown: Path | None = None) -> GraphSource:
    """Load the (scanned) folder with ``tf.saved_model.load`` (its variables restored) and take the
    signature ``found["signature"]``."""
    tf = require("tensorflow", "export")
    shown = Path(shown or folder)
    try:
        loaded = tf.saved_model.load(os.fspath(folder))
    except Exception as exc:  # TensorFlow raises many kinds for a folder it cannot restore
        from edgeattn.core.errors import first_line

        raise InputError(f"{shown}: TensorFlow cannot load the SavedModel: {first_line(exc)}") from None
    function = loaded.signatures[found["signature"]]
    _, kwargs = function.structured_input_signature
    keys = list(getattr(function, "_arg_keywords", None) or sorted(kwargs))
    names, specs = [], []
    for index, key in enumerate(keys):
        spec = kwargs[key]
        shape = tuple(spec.shape) if spec.shape.rank is not None else None
        if shape is None:
            raise UnsupportedModelError(f"{shown}: the signature's input {key!r} has no known rank")
        if shape and shape[0] is not None:
            raise UnsupportedModelError(
                f"{shown}: the signature's input {key!r} has a fixed batch axis ({shape[0]}); "
                "the exported graph must take any batch size",
                hint="save the signature with None as the first axis, e.g. tf.TensorSpec([None, ...])",
            )
        name = key if _NAME_OK.match(key) else f"input_{index}"
        names.append(name)
        specs.append(tf.TensorSpec(shape, spec.dtype, name=name))
    outputs = function.structured_outputs
    if not isinstance(outputs, dict):
        raise UnsupportedModelError(f"{shown}: the signature's outputs are not named")
    return GraphSource(
        shown, found["signature"], function, keys, names, specs, sorted(outputs), found, keep=loaded
    )


def output_order(proto, source: GraphSource) -> list[str]:
    """The signature's output key for each ONNX output: as recorded at export, else by name, else (one
    output each) the only one."""
    names = [o.name for o in proto.graph.output]
    meta = {p.key: p.value for p in proto.metadata_props}
    recorded = json.loads(meta.get(SIGNATURE_OUTPUTS_KEY, "null") or "null")
    if (
        isinstance(recorded, list)
        and len(recorded) == len(names)
        and set(recorded) <= set(source.output_keys)
    ):
        return recorded
    if set(names) <= set(source.output_keys):
        return names
    if len(names) == 1 and len(source.output_keys) == 1:
        return list(source.output_keys)
    raise InputError(
        f"the ONNX outputs {names} do not match the signature's outputs {source.output_keys}",
        hint="verify the model against the folder it was exported from",
    )
