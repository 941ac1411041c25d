"""Keras 2 SavedModel folders (``model.save("folder")`` in TF 2.0-2.15) read as data: the Keras config from
``keras_metadata.pb`` and the weights from the ``variables/`` checkpoint, as plain arrays.

Nothing of the SavedModel's graph is loaded or run on this path. ``keras_metadata.pb`` is a protobuf whose nodes
carry each Keras object's metadata as a JSON string; the root node holds the model's full config for functional
and Sequential models, which is then checked like any config and built by Keras 3 (``edgeattn.convert.loading``). The
checkpoint is read with TensorFlow's checkpoint reader (``tf.train.load_checkpoint``: arrays by name, no graph).
Its object graph (``_CHECKPOINTABLE_OBJECT_GRAPH``) says which array is which layer's: every Keras 2 layer
node lists its weights, in ``layer.weights`` order, under its child ``variables``.

A folder whose metadata has no such config (a subclassed model, a ``tf.Module``) takes the graph path instead
(``edgeattn.convert.tfgraph``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from edgeattn.core.errors import InputError, UnsupportedModelError, check_size

SAVED_MODEL = "saved_model.pb"
KERAS_METADATA = "keras_metadata.pb"
CHECKPOINT = Path("variables") / "variables"
OBJECT_GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"
# Trackable children Keras 2 adds to every layer for serving; they are not sub-layers.
SERVING_CHILDREN = frozenset(
    {
        "variables",
        "trainable_variables",
        "non_trainable_variables",
        "regularization_losses",
        "keras_api",
        "__call__",
        "call_and_return_all_conditional_losses",
        "call_and_return_conditional_losses",
        "layer_metrics",
        "layer_regularization_losses",
        "metrics",
    }
)


def is_savedmodel(path: str | os.PathLike) -> bool:
    path = Path(path)
    return path.is_dir() and (path / SAVED_MODEL).is_file()


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _fields(data: bytes):
    """(field number, wire type, value) of one protobuf message; length-delimited values as bytes."""
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, kind = key >> 3, key & 7
        if kind == 0:
            value, pos = _varint(data, pos)
        elif kind == 2:
            size, pos = _varint(data, pos)
            if pos + size > len(data):
                raise ValueError("truncated field")
            value, pos = data[pos : pos + size], pos + size
        elif kind == 1:
            value, pos = data[pos : pos + 8], pos + 8
        elif kind == 5:
            value, pos = data[pos : pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported wire type {kind}")
        yield number, kind, value


def read_metadata(folder: str | os.PathLike, shown: Path | None = None) -> list[dict]:
    """The Keras objects a SavedModel records, as ``{"path": "root.layer-0", "identifier": ..., "metadata":
    {...}}``, decoded from the protobuf wire format by hand: no TensorFlow, no code. TF 2.4-2.15 write them to
    ``keras_metadata.pb`` (``SavedMetadata.nodes``: node_path = 3, identifier = 4, metadata = 5); TF 2.0-2.3
    kept them in ``saved_model.pb``'s object graph (``_object_graph_metadata``). Empty when there are none."""
    folder = Path(folder)
    shown = shown or folder
    path = folder / KERAS_METADATA
    if not path.is_file():
        return _object_graph_metadata(folder / SAVED_MODEL, shown)
    nodes = []
    try:
        for number, kind, value in _fields(_protobuf_file(path, shown)):
            if number != 1 or kind != 2:
                continue
            node = {}
            for field, field_kind, item in _fields(value):
                if field_kind == 2 and field in (3, 4, 5):
                    node[{3: "path", 4: "identifier", 5: "metadata"}[field]] = item.decode("utf-8")
            node["metadata"] = json.loads(node.get("metadata") or "{}")
            if not isinstance(node["metadata"], dict):
                raise ValueError(f"node {node.get('path')!r} holds no JSON object")
            nodes.append(node)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise InputError(f"{shown}: {KERAS_METADATA} is damaged: {exc}") from None
    return nodes


def _protobuf_file(path: Path, shown: Path) -> bytes:
    """The bytes of a protobuf file of the folder: a regular file (no link) within the size limit."""
    if path.is_symlink() or not path.is_file():
        raise InputError(f"{shown}: {path.name} is not a regular file of the folder")
    check_size(path, path.stat().st_size)
    return path.read_bytes()


def _first(data: bytes, number: int) -> bytes | None:
    return next((v for n, k, v in _fields(data) if n == number and k == 2), None)


def _object_graph_metadata(path: Path, shown: Path) -> list[dict]:
    """The Keras metadata that TF 2.0-2.3 stored in ``saved_model.pb``: ``SavedModel.meta_graphs`` (2) ->
    ``MetaGraphDef.object_graph_def`` (7) -> ``SavedObjectGraph.nodes`` (1), each ``SavedObject`` with its
    ``children`` (1: node_id = 1, local_name = 2) and ``user_object`` (4: identifier = 1, metadata = 3). The
    path of each node is the first by which the root reaches it, as Keras named them."""
    if not path.is_file():
        return []
    try:
        meta_graph = _first(_protobuf_file(path, shown), 2)
        graph = _first(meta_graph, 7) if meta_graph is not None else None
        if graph is None:
            return []
        objects = []
        for number, kind, value in _fields(graph):
            if number != 1 or kind != 2:
                continue
            children, user = [], {}
            for field, field_kind, item in _fields(value):
                if field == 1 and field_kind == 2:
                    ref = {n: v for n, _k, v in _fields(item)}
                    children.append((ref.get(1, 0), ref.get(2, b"").decode("utf-8")))
                elif field == 4 and field_kind == 2:
                    user = {n: v for n, k, v in _fields(item) if k == 2}
            objects.append((children, user))
        paths = {0: "root"}
        queue = [0]
        while queue:
            current = queue.pop(0)
            for child, name in objects[current][0] if current < len(objects) else []:
                if child not in paths:
                    paths[child] = f"{paths[current]}.{name}"
                    queue.append(child)
        nodes = []
        for index, (_children, user) in enumerate(objects):
            identifier = user.get(1, b"").decode("utf-8")
            if index in paths and identifier.startswith("_tf_keras") and user.get(3):
                metadata = json.loads(user[3].decode("utf-8"))
                if not isinstance(metadata, dict):
                    raise ValueError(f"object {paths[index]!r} holds no JSON object")
                nodes.append({"path": paths[index], "identifier": identifier, "metadata": metadata})
    except (ValueError, UnicodeDecodeError, IndexError, RecursionError) as exc:
        raise InputError(f"{shown}: {SAVED_MODEL} is damaged: {exc}") from None
    return nodes


def keras_config(nodes: list[dict]) -> dict | None:
    """The model config the root node records (functional or Sequential: it lists its layers), or None."""
    root = next((n for n in nodes if n.get("path") == "root"), None)
    if root is None:
        return None
    meta = root["metadata"]
    config = meta.get("config")
    layers = config.get("layers") if isinstance(config, dict) else config
    if not isinstance(meta.get("class_name"), str) or not isinstance(layers, list):
        return None
    # Only the architecture: the metadata's training_config (loss, optimizer, metrics) is left behind.
    return {"class_name": meta["class_name"], "config": _plain(config)}


def _plain(node):
    """The metadata's JSON with its tuples and shapes (``{"class_name": "__tuple__" | "TensorShape", "items":
    [...]}``) as the lists an ``.h5`` config holds."""
    if isinstance(node, list):
        return [_plain(item) for item in node]
    if not isinstance(node, dict):
        return node
    if node.get("class_name") in ("__tuple__", "TensorShape") and isinstance(node.get("items"), list):
        return [_plain(item) for item in node["items"]]
    return {k: _plain(v) for k, v in node.items()}


def has_keras_config(folder: str | os.PathLike) -> bool:
    """Whether the folder is a Keras 2 SavedModel whose metadata holds a buildable (layers) config."""
    return is_savedmodel(folder) and keras_config(read_metadata(folder)) is not None


def _reader(folder: Path, shown: Path):
    import tensorflow as tf

    prefix = folder / CHECKPOINT
    if not Path(f"{prefix}.index").is_file():
        raise InputError(f"{shown} holds no variables/variables.index: the SavedModel has no weights")
    try:
        return tf.train.load_checkpoint(str(prefix))
    except Exception as exc:  # TensorFlow raises its own error kinds for a damaged bundle
        raise InputError(
            f"{shown}: the variables checkpoint cannot be read: {str(exc).splitlines()[0]}"
        ) from None


def read_all_weights(folder: str | os.PathLike, shown: Path | None = None) -> int:
    """Read every array of the checkpoint (the contained child does this before the parent touches it).
    Returns how many there are."""
    folder = Path(folder)
    reader = _reader(folder, shown or folder)
    names = reader.get_variable_to_shape_map()
    for name in names:
        reader.get_tensor(name)
    return len(names)


def layer_weights(folder: str | os.PathLike, nodes: list[dict], shown: Path | None = None) -> dict:
    """Each top-level Keras layer's weights: layer name -> [(path inside the layer, array)], in Keras 2's
    ``layer.weights`` order, from the checkpoint's object graph."""
    from tensorflow.core.protobuf import trackable_object_graph_pb2

    folder = Path(folder)
    shown = shown or folder
    reader = _reader(folder, shown)
    graph = trackable_object_graph_pb2.TrackableObjectGraph()
    try:
        graph.ParseFromString(reader.get_tensor(OBJECT_GRAPH_KEY))
    except Exception as exc:
        raise InputError(f"{shown}: the checkpoint's object graph cannot be read: {exc}") from None

    def child(node_id: int, name: str) -> int | None:
        return next((c.node_id for c in graph.nodes[node_id].children if c.local_name == name), None)

    def value(node_id: int):
        keys = [a.checkpoint_key for a in graph.nodes[node_id].attributes if a.name == "VARIABLE_VALUE"]
        return reader.get_tensor(keys[0]) if keys else None

    def paths_below(node_id: int) -> dict[int, str]:
        """Variable node id -> its path under the layer (``cell/kernel``), sub-layers included."""
        found: dict[int, str] = {}
        queue = [(node_id, "")]
        seen = {node_id}
        while queue:
            current, prefix = queue.pop(0)
            for c in graph.nodes[current].children:
                if c.local_name in SERVING_CHILDREN or c.node_id in seen:
                    continue
                seen.add(c.node_id)
                path = f"{prefix}{c.local_name}"
                if graph.nodes[c.node_id].attributes:
                    found.setdefault(c.node_id, path)
                queue.append((c.node_id, path + "/"))
        return found

    weights: dict[str, list] = {}
    for node in nodes:
        path = node.get("path", "")
        if path.count(".") != 1 or not path.startswith("root.layer"):
            continue
        name = node["metadata"].get("name")
        layer = child(0, path.split(".", 1)[1])
        if layer is None or not isinstance(name, str):
            continue
        variables = child(layer, "variables")
        if variables is None:
            continue
        try:
            listed = sorted(graph.nodes[variables].children, key=lambda c: int(c.local_name))
        except (ValueError, IndexError):
            raise InputError(f"{shown}: the checkpoint's object graph is damaged (layer {name!r})") from None
        named = paths_below(layer)
        arrays = [(named.get(c.node_id, c.local_name), value(c.node_id)) for c in listed]
        if any(a is None for _, a in arrays):
            raise UnsupportedModelError(
                f"{shown}: layer {name!r} lists a weight the checkpoint does not hold"
            )
        if arrays:
            weights[name] = arrays
    return weights
