"""SavedModel folders without a usable Keras config, converted from the serving signature's graph.

Which folders: a directory holding ``saved_model.pb`` whose Keras metadata (``keras_metadata.pb``, or TF
2.0-2.3's in the object graph) is missing or records no functional/Sequential config with ``layers`` (a subclassed Keras 2 model saved with
``model.save("folder")``, a ``tf.saved_model.save`` of a ``tf.Module``, a Keras 3 ``model.export("folder")``).
``is_graph_savedmodel`` says which; Keras 2 folders with their config take ``edgeattn.savedmodel`` instead.

Loading a SavedModel runs its graph, so the graph is read as data first (``scan``): ``saved_model.pb`` is
parsed as a protobuf (``saved_model_pb2``; nothing is loaded) in the contained child process
(``edgeattn.sandbox``, kind ``savedmodel``), and every op TensorFlow could run while loading the folder and
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

Variables: restoring them is not done by ops from the file. ``tf.saved_model.load`` reads
``variables/variables.*`` with TensorFlow's own checkpoint code, driven by the object graph (each variable
node's checkpoint key), and assigns the arrays itself. The file's saver functions
(``__inference__traced_save_*``: ``SaveV2``, ``MergeV2Checkpoints``, ``StringJoin``;
``__inference__traced_restore_*``: ``RestoreV2``, ``AssignVariableOp``) sit in the function library but are
reached from no signature and no load-time function; only the TensorFlow 1 loader runs them, and edgeattn never
uses it (a SavedModel without an object graph, i.e. a TF1 one, is refused). So ``RestoreV2`` is not on the list,
and neither is any op that writes a variable (``Assign*``, ``ResourceApply*``, ``ResourceScatter*``): a serving
signature that changes state is no function of its inputs, and an ONNX graph could not hold it. Reading one is
``ReadVariableOp`` (and ``ResourceGather``, an Embedding's lookup), and ``VarHandleOp`` (a handle, no data) is allowed
for graphs that create their handles.

Refused by kind, with the reason in the message: file ops (``ReadFile``, ``WriteFile``, ``MatchingFiles``,
readers, ``ImmutableConst``, which maps a file), checkpoint ops, Python callbacks (``PyFunc``,
``PyFuncStateless``, ``EagerPyFunc``: ``tf.py_function``/``tf.numpy_function``; the SavedModel does not hold
their Python code, the node calls whatever callback the loading process registered under its token), queues,
``tf.data`` ops (they read files and run functions), summaries, printing, random numbers, variable writes; any
other op not on the list is refused as such. Not covered: a crafted tensor that crashes a TensorFlow kernel
during the load (the parse is contained in a child; the load and conversion run in the CLI's process).

Then the folder is loaded (``tf.saved_model.load``, variables restored), its serving signature (``serving_default``,
or the only one) converted by tf2onnx's ``from_function`` with the signature's input specs (batch axis free), and
the export pipeline (``edgeattn.export``) cleans and checks the graph as for Keras models. The parity reference
(export's check and ``verify --keras FOLDER``) is the SavedModel's own signature run by TensorFlow.
"""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeattn import sandbox, savedmodel
from edgeattn.errors import InputError, UnsafeModelError, UnsupportedModelError, require
from edgeattn.onnxfile import SIGNATURE_OUTPUTS_KEY
from edgeattn.savedmodel import SAVED_MODEL

SOURCE_FORMAT = "savedmodel-graph"
SIGNATURE_KEY = "edgeattn.signature"
SERVING = "serving_default"
MAX_PROTO_BYTES = (2 << 30) - 1  # protobuf cannot parse messages of 2 GiB or more
TOP_LEVEL = "the top-level graph"

ALLOWED_OPS = frozenset(
    """
    Const Placeholder PlaceholderWithDefault Identity IdentityN NoOp StopGradient PreventGradient Snapshot
    EnsureShape CheckNumerics CheckNumericsV2 Assert
    PartitionedCall StatefulPartitionedCall While StatelessWhile If StatelessIf Case StatelessCase
    Switch Merge Enter Exit NextIteration LoopCond
    VarHandleOp ReadVariableOp ResourceGather ResourceGatherNd VariableShape VarIsInitializedOp
    Abs Acos Acosh Add AddN AddV2 Asin Asinh Atan Atan2 Atanh BiasAdd BiasAddV1 Ceil ClipByValue Cos Cosh
    Div DivNoNan Elu Equal Erf Erfc Exp Expm1 Floor FloorDiv FloorMod Greater GreaterEqual Inv IsFinite IsInf
    IsNan LeakyRelu Less LessEqual Lgamma Log Log1p LogicalAnd LogicalNot LogicalOr LogSoftmax Maximum Minimum
    Mod Mul MulNoNan Neg NotEqual Pow RealDiv Reciprocal Relu Relu6 Rint Round Rsqrt Selu Sigmoid Sign Sin
    Sinh Softmax Softplus Softsign Sqrt Square SquaredDifference Sub Tan Tanh TruncateDiv TruncateMod Xdivy
    Xlogy Xlog1py BitwiseAnd BitwiseOr BitwiseXor Invert LeftShift RightShift
    All Any ArgMax ArgMin Max Mean Min Prod Sum EuclideanNorm Cumsum Cumprod
    MatMul BatchMatMul BatchMatMulV2 BatchMatMulV3 Einsum Conv2D Conv3D DepthwiseConv2dNative MaxPool MaxPoolV2
    MaxPool3D AvgPool AvgPool3D FusedBatchNorm FusedBatchNormV2 FusedBatchNormV3 LRN TopKV2
    Shape ShapeN Size Rank Reshape Squeeze ExpandDims Transpose ConjugateTranspose Concat ConcatV2 ConcatOffset
    Pack Unpack Split SplitV Slice StridedSlice StridedSliceGrad Tile Pad PadV2 MirrorPad Fill ZerosLike
    OnesLike Range LinSpace BroadcastTo BroadcastArgs BroadcastGradientArgs Gather GatherV2 GatherNd ScatterNd
    Where Select SelectV2 Reverse ReverseV2 ReverseSequence OneHot Cast InvertPermutation SpaceToDepth
    DepthToSpace SpaceToBatchND BatchToSpaceND MatrixBandPart MatrixDiag MatrixDiagV2 MatrixDiagV3
    MatrixDiagPart MatrixDiagPartV2 MatrixDiagPartV3 SegmentSum UnsortedSegmentSum ResizeBilinear
    ResizeNearestNeighbor TensorScatterUpdate TensorScatterAdd TensorScatterSub TensorScatterMax
    TensorScatterMin DynamicStitch ParallelDynamicStitch Bucketize Unique Bitcast Conv2DBackpropInput
    Conv3DBackpropInputV2 Erfinv Ndtri
    TensorListFromTensor TensorListReserve TensorListSetItem TensorListGetItem TensorListStack
    TensorListElementShape TensorListLength TensorListPushBack TensorListPopBack EmptyTensorList
    TensorListResize TensorListGather TensorListScatterIntoExistingList TensorListConcatV2 TensorListSplit
    TensorArrayV3 TensorArrayReadV3 TensorArrayWriteV3 TensorArrayScatterV3 TensorArrayGatherV3
    TensorArraySizeV3 TensorArrayCloseV3
    CudnnRNN CudnnRNNV2 CudnnRNNV3 CudnnRNNBackprop CudnnRNNBackpropV2 CudnnRNNBackpropV3 CudnnRNNParamsSize
    CudnnRNNParamsToCanonical CudnnRNNParamsToCanonicalV2 CudnnRNNCanonicalToParams CudnnRNNCanonicalToParamsV2
    """.split()
)

_PYTHON_OPS = frozenset({"PyFunc", "PyFuncStateless", "EagerPyFunc"})
_CHECKPOINT_OPS = frozenset(
    {"Save", "SaveV2", "SaveSlices", "Restore", "RestoreV2", "RestoreSlice", "MergeV2Checkpoints"}
)
_FILE_REASONS = {
    "WriteFile": "it writes files",
    "ReadFile": "it reads files",
    "MatchingFiles": "it lists files",
    "ImmutableConst": "it maps a file into memory",
    "DeleteFile": "it deletes files",
}


def reason(op: str) -> tuple[int, str]:
    """Why ``op`` is refused, with a rank: lower is more dangerous (the error names the most dangerous)."""
    if op in _FILE_REASONS:
        return 0, _FILE_REASONS[op]
    if op in _PYTHON_OPS:
        return 0, "it calls Python code of the loading process (tf.py_function / tf.numpy_function)"
    if op in _CHECKPOINT_OPS:
        return 0, "it reads or writes checkpoint files"
    if "File" in op or "Reader" in op:
        return 0, "it reads or writes files"
    if "Dataset" in op or "Iterator" in op:
        return 1, "it is a tf.data op (input pipelines read files and run functions)"
    if "Queue" in op:
        return 1, "it is a queue op (state shared between runs)"
    if "Summary" in op:
        return 1, "it writes summaries (event files)"
    if op.startswith(("Assign", "ResourceApply", "ResourceScatter", "ResourceSparseApply", "Scatter")):
        return 2, "it writes a variable (a serving signature must not change state)"
    if op in ("Print", "PrintV2"):
        return 2, "it prints (a side effect)"
    if "Random" in op or op.startswith("Stateful"):
        return 2, "it draws random numbers (the graph would not be a function of its inputs)"
    return 3, "it is not on edgeattn's list of pure tensor ops"


@dataclass(frozen=True)
class Refusal:
    op: str
    node: str
    function: str
    rank: int
    why: str

    @property
    def text(self) -> str:
        where = TOP_LEVEL if self.function == TOP_LEVEL else f"function {self.function!r}"
        return f"op {self.op} in node {self.node!r} of {where}: {self.why}"


# -- which folders --------------------------------------------------------------------------------------------


def is_graph_savedmodel(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a SavedModel folder that takes the graph path: no Keras metadata, or metadata whose
    root records no functional/Sequential config with ``layers`` (``savedmodel.has_keras_config``). Imports no
    TensorFlow."""
    return savedmodel.is_savedmodel(path) and not savedmodel.has_keras_config(path)


# -- the scan (as data) ---------------------------------------------------------------------------------------


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
        from edgeattn.errors import first_line

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
