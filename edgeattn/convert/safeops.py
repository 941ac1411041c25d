"""The ops a graph SavedModel may hold (``ALLOWED_OPS``, a list of pure tensor ops) and why every other is
refused (``reason``, ``Refusal``): the allowlist that ``edgeattn.convert.tfgraphscan`` checks
``saved_model.pb`` against before TensorFlow loads the folder (``edgeattn.convert.tfgraph``).

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
"""

from __future__ import annotations

from dataclasses import dataclass

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
