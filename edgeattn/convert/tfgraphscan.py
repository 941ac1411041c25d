"""``saved_model.pb`` read as data and every op it could run checked against the allowlist
(``edgeattn.convert.safeops``), before TensorFlow loads a graph SavedModel folder (``edgeattn.convert.tfgraph``).

Loading a SavedModel runs its graph, so the graph is read as data first (``scan``): ``saved_model.pb`` is
parsed as a protobuf (``saved_model_pb2``; nothing is loaded) in the contained child process
(``edgeattn.core.sandbox``, kind ``savedmodel``), and every op TensorFlow could run while loading the folder and
calling its serving signature must be on ``ALLOWED_OPS``, a list of pure tensor ops. Anything else is refused,
naming the op, its node and the function it sits in (``UnsafeModelError``, exit 2), unless ``--unsafe``.

What is scanned, and why:

- The serving signature's function and every function it reaches: function-valued attributes (``f`` of
  ``PartitionedCall``/``StatefulPartitionedCall``, ``body``/``cond`` of ``While``, ``then_branch``/
  ``else_branch`` of ``If``, ``branches`` of ``Case``, any other), and nodes whose op is a library function,
  recursively. Every node of such a function is scanned, not only those the outputs depend on: TensorFlow 2
  runs a function's stateful ops whether or not an output needs them (automatic control dependencies), which is
  how a ``tf.io.write_file`` with no consumer still writes.
- Functions with the same ``api_implements`` attribute as a reached one: Grappler's implementation selector may
  run one of them in its place (Keras 2's LSTM ships a CPU and a cuDNN version; the cuDNN one holds
  ``CudnnRNN``, which is on the list).
- The functions TensorFlow runs while loading, whatever the signature: a resource's ``_create_resource``,
  ``_initialize`` and ``_destroy_resource`` and a saveable object's save and restore functions (a lookup table
  initialised from a text file would read that file at load time; it is refused).
- In the top-level graph, the nodes the signatures' tensors depend on (the signature's placeholders and its
  ``StatefulPartitionedCall``; also ``__saved_model_init_op``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from edgeattn.convert.safeops import ALLOWED_OPS, TOP_LEVEL, Refusal, reason
from edgeattn.convert.savedmodel import SAVED_MODEL
from edgeattn.core import sandbox
from edgeattn.core.errors import InputError, UnsafeModelError, UnsupportedModelError, require

SERVING = "serving_default"
MAX_PROTO_BYTES = (2 << 30) - 1  # protobuf cannot parse messages of 2 GiB or more


def _saved_model_pb2(light: bool):
    """``tensorflow.core.protobuf.saved_model_pb2``. With ``light`` (the contained child, which loads nothing
    else), the generated protobuf modules are imported without running TensorFlow's ``__init__`` (seconds
    and hundreds of MB): a bare package object stands in for ``tensorflow``."""
    if light and "tensorflow" not in sys.modules:
        import importlib.util
        import types

        spec = importlib.util.find_spec("tensorflow")
        if spec is None or not spec.submodule_search_locations:
            require("tensorflow", "export")
        package = types.ModuleType("tensorflow")
        package.__path__ = list(spec.submodule_search_locations)
        sys.modules["tensorflow"] = package
    try:
        from tensorflow.core.protobuf import saved_model_pb2
    except ImportError:
        require("tensorflow", "export")
        raise
    return saved_model_pb2


def read_saved_model(folder: str | os.PathLike, light: bool = False, shown: Path | None = None):
    """``saved_model.pb`` parsed as a ``SavedModel`` protobuf message (nothing loaded or run)."""
    path = Path(folder) / SAVED_MODEL
    shown = shown or Path(folder)
    size = path.stat().st_size
    if size > MAX_PROTO_BYTES:
        raise InputError(f"{shown}: {SAVED_MODEL} is {size:,} bytes, over protobuf's 2 GiB limit")
    pb2 = _saved_model_pb2(light)
    message = pb2.SavedModel()
    try:
        message.ParseFromString(path.read_bytes())
    except Exception as exc:  # google.protobuf.message.DecodeError and upb's own kinds
        raise InputError(f"{shown}: {SAVED_MODEL} is not a SavedModel protobuf ({exc})") from None
    return message


def _meta_graph(saved, shown: Path):
    graphs = list(saved.meta_graphs)
    if not graphs:
        raise InputError(f"{shown}: {SAVED_MODEL} holds no graph")
    serve = [g for g in graphs if "serve" in g.meta_info_def.tags]
    if len(graphs) > 1 and not serve:
        raise InputError(f"{shown}: {len(graphs)} graphs and none tagged 'serve'")
    return (serve or graphs)[0]


def pick_signature(names, shown: Path) -> str:
    """``serving_default``, or the only signature; several without it are refused with their names."""
    usable = sorted(n for n in names if not n.startswith("__"))
    if SERVING in usable:
        return SERVING
    if len(usable) == 1:
        return usable[0]
    if not usable:
        raise InputError(
            f"{shown} has no serving signature",
            hint="save it with tf.saved_model.save(obj, folder, signatures=...) or model.export(folder)",
        )
    raise InputError(
        f"{shown} has {len(usable)} signatures and none is {SERVING!r}: {', '.join(usable)}",
        hint=f"save the one to export as {SERVING!r}",
    )


def _called(node) -> list[str]:
    """The functions a node calls: function-valued attributes, and its op when that is a library function."""
    names = []
    for value in node.attr.values():
        kind = value.WhichOneof("value")
        if kind == "func":
            names.append(value.func.name)
        elif kind == "list":
            names.extend(f.name for f in value.list.func)
    return names


def _tensor_node(name: str) -> str:
    return name.lstrip("^").split(":")[0]


def scan(folder: str | os.PathLike, light: bool = False, shown: Path | None = None) -> dict:
    """Read ``saved_model.pb`` as data and check every op that loading it and calling its serving signature
    could run. Returns (JSON-able) the signature, its inputs and outputs, the op counts, how many while loops
    the signature reaches and the refusals (most dangerous first); raises ``InputError`` for a folder that is
    no usable SavedModel."""
    shown = Path(shown or folder)
    saved = read_saved_model(folder, light, shown)
    meta = _meta_graph(saved, shown)
    objects = meta.object_graph_def
    if not objects.nodes:
        raise UnsupportedModelError(
            f"{shown} is a TensorFlow 1 SavedModel (it has no object graph)",
            hint="re-save it with TensorFlow 2 (tf.saved_model.save) from the code that builds it",
        )
    signature = pick_signature(meta.signature_def.keys(), shown)
    sig = meta.signature_def[signature]
    library = {f.signature.name: f for f in meta.graph_def.library.function}
    implements: dict[str, list[str]] = {}
    for name, function in library.items():
        if "api_implements" in function.attr:
            implements.setdefault(function.attr["api_implements"].s.decode(), []).append(name)

    refusals: list[Refusal] = []
    ops: dict[str, int] = {}
    seen: set[str] = set()
    pending: list[tuple[str, str]] = []  # (function, who calls it)

    def check(node, where: str) -> None:
        ops[node.op] = ops.get(node.op, 0) + 1
        for name in _called(node) + ([node.op] if node.op in library else []):
            pending.append((name, where))
        if node.op not in ALLOWED_OPS and node.op not in library:
            rank, why = reason(node.op)
            refusals.append(Refusal(node.op, node.name, where, rank, why))

    # the top-level graph: what the signatures' tensors depend on
    top = {node.name: node for node in meta.graph_def.node}
    wanted = [_tensor_node(t.name) for s in meta.signature_def.values() for t in s.outputs.values()]
    visited: set[str] = set()
    while wanted:
        name = wanted.pop()
        if name in visited or name not in top:
            continue
        visited.add(name)
        check(top[name], TOP_LEVEL)
        wanted.extend(_tensor_node(i) for i in top[name].input)

    # the object graph: the signature's function, and what TensorFlow runs while loading
    called, at_load = _object_functions(objects, signature)
    pending.extend((name, "the object graph") for name in called + at_load)
    while pending:
        name, caller = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        function = library.get(name)
        if function is None:
            refusals.append(
                Refusal("(call)", name, caller, 0, "it calls a function that the file does not hold")
            )
            continue
        for node in function.node_def:
            check(node, name)
        if "api_implements" in function.attr:  # Grappler may run any of these in its place
            key = function.attr["api_implements"].s.decode()
            pending.extend((other, name) for other in implements.get(key, []))

    refusals.sort(key=lambda r: r.rank)
    inputs = {
        key: {"dtype": int(t.dtype), "shape": _shape(t.tensor_shape)} for key, t in sorted(sig.inputs.items())
    }
    return {
        "signature": signature,
        "signatures": sorted(n for n in meta.signature_def if not n.startswith("__")),
        "inputs": inputs,
        "outputs": sorted(sig.outputs.keys()),
        "ops": dict(sorted(ops.items())),
        "functions": len(seen),
        "loops": _loops(library, called),
        "saved_by": meta.meta_info_def.tensorflow_version,
        "refusals": [r.__dict__ for r in refusals],
    }


def _shape(shape) -> list | None:
    if shape.unknown_rank:
        return None
    return [d.size if d.size >= 0 else None for d in shape.dim]


def _loops(library: dict, roots: list[str]) -> int:
    """The while loops that calling ``roots`` runs (following calls, not ``api_implements`` alternatives): each
    must become one fused recurrent node in the ONNX graph."""
    seen: set[str] = set()
    pending = list(roots)
    loops = 0
    while pending:
        name = pending.pop()
        if name in seen or name not in library:
            continue
        seen.add(name)
        for node in library[name].node_def:
            loops += node.op in ("While", "StatelessWhile")
            pending.extend(_called(node) + ([node.op] if node.op in library else []))
    return loops


def _object_functions(objects, signature: str) -> tuple[list[str], list[str]]:
    """Concrete functions that the object graph binds: the signature's, and those TensorFlow runs while
    loading (a resource's create/initialize/destroy functions, saveable objects' save/restore functions)."""
    nodes = objects.nodes

    def functions_of(index: int) -> list[str]:
        node = nodes[index]
        kind = node.WhichOneof("kind")
        if kind == "function":
            return list(node.function.concrete_functions)
        if kind == "bare_concrete_function":
            return [node.bare_concrete_function.concrete_function_name]
        return []

    called: list[str] = []
    for child in nodes[0].children:
        if child.local_name == "signatures":
            for entry in nodes[child.node_id].children:
                if entry.local_name == signature:
                    called += functions_of(entry.node_id)
    if not called:  # no signature object: check every bound function
        called = list(objects.concrete_functions.keys())
    found: list[str] = []
    for node in nodes:
        if node.WhichOneof("kind") == "resource":
            for child in node.children:
                found += functions_of(child.node_id)
        for saveable in node.saveable_objects.values():
            found += functions_of(saveable.save_function) + functions_of(saveable.restore_function)
    return called, found


def check_folder(folder: str | os.PathLike, unsafe: bool = False, shown: Path | None = None) -> dict:
    """``scan`` in the contained child process (in-process with ``EDGEATTN_CONTAIN=0``); refusals raise
    ``UnsafeModelError`` naming the most dangerous op, unless ``unsafe``."""
    shown = Path(shown or folder)
    if sandbox.enabled():
        found = sandbox.parse("savedmodel", folder, shown=shown)
    else:
        found = scan(folder, shown=shown)
    refusals = found["refusals"]
    if refusals and not unsafe:
        first = Refusal(**refusals[0])
        more = f" (and {len(refusals) - 1} more refused node(s))" if len(refusals) > 1 else ""
        raise UnsafeModelError(
            f"refused to load: {first.text}{more}",
            hint="nothing from the folder was loaded or run; pass --unsafe only if you trust the folder "
            "and its author",
        )
    return found
