"""ONNX clean-up passes: small rewrites used after conversion and by the graph rewrites. Needs ``onnx`` and
numpy (``save_basic`` and ``optimize_basic`` also onnxruntime).

- ``drop_zero_initial_states``, ``last_step_from_final_state``: a recurrent node's zero initial states go; its
  final state is read where tf2onnx slices the last step off its sequence.
- ``prune``, ``prune_dead``, ``drop_unused_opsets``: nodes, initializers and opset imports that nothing needs.
- ``rename_value``, ``name_dynamic_axes``, ``with_outputs``: tensor and axis names; a copy with more outputs.
- ``save_basic``, ``optimize_basic``: onnxruntime's BASIC level (standard operators only).

The facts and structure checks (``summarize``, ``check_structure``, the op families, ``attr``,
``consumers``...) are in ``edgeattn.graphs.facts``; they are imported here, so ``graph.summarize`` and the
like work as before.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

# The facts and checks, importable from here as before (the passes below use some of them).
from edgeattn.graphs.facts import (  # noqa: F401
    INTEGER_TYPES,
    LOOP_OPS,
    RECURRENT_OPS,
    GraphSummary,
    _all_nodes,
    _initializer_names,
    attr,
    axes_of,
    check_structure,
    consumers,
    inferred_shapes,
    only_consumer,
    opset_of,
    other_input,
    summarize,
    vocab_size,
)


def _producers(graph) -> dict:
    return {out: node for node in graph.node for out in node.output}


def _is_zero(name: str, graph, producers: dict, initializers: dict) -> bool:
    """Whether tensor ``name`` is all zeros whatever the input (a zero constant broadcast to any shape)."""
    if name in initializers:
        return not np.any(numpy_helper.to_array(initializers[name]))
    node = producers.get(name)
    if node is None:
        return False
    if node.op_type in {"Unsqueeze", "Squeeze", "Reshape", "Expand", "Identity", "Cast", "Tile"}:
        return _is_zero(node.input[0], graph, producers, initializers)
    if node.op_type in {"Constant", "ConstantOfShape"}:
        values = [a.t for a in node.attribute if a.name == "value"]
        return not values or not np.any(numpy_helper.to_array(values[0]))
    return False


def drop_zero_initial_states(model: onnx.ModelProto) -> int:
    """Remove initial_h/initial_c inputs of recurrent nodes that are zeros (ONNX's default). Returns count."""
    graph = model.graph
    producers = _producers(graph)
    initializers = {t.name: t for t in graph.initializer}
    dropped = 0
    for node in graph.node:
        if node.op_type not in RECURRENT_OPS:
            continue
        for slot in (5, 6) if node.op_type == "LSTM" else (5,):
            if (
                len(node.input) > slot
                and node.input[slot]
                and _is_zero(node.input[slot], graph, producers, initializers)
            ):
                node.input[slot] = ""
                dropped += 1
        while node.input and node.input[-1] == "":
            node.input.pop()
    prune(model)
    return dropped


def prune(model: onnx.ModelProto) -> None:
    """Remove nodes whose outputs nobody uses, and initializers nobody reads."""
    graph = model.graph
    keep_outputs = {o.name for o in graph.output}
    while True:
        used = {i for n in graph.node for i in n.input} | keep_outputs
        used |= {i for n in _all_nodes(graph) for i in n.input}
        dead = [n for n in graph.node if not any(o in used for o in n.output if o)]
        if not dead:
            break
        for node in dead:
            graph.node.remove(node)
    used = {i for n in _all_nodes(graph) for i in n.input}
    for tensor in [t for t in graph.initializer if t.name not in used]:
        graph.initializer.remove(tensor)
    value_names = used | keep_outputs | {o for n in graph.node for o in n.output}
    for info in [v for v in graph.value_info if v.name not in value_names]:
        graph.value_info.remove(info)


def rename_value(model: onnx.ModelProto, old: str, new: str) -> None:
    """Rename a tensor everywhere it appears (producers, consumers, graph inputs/outputs, value_info)."""
    if old == new:
        return
    graph = model.graph
    for node in _all_nodes(graph):
        for seq in (node.input, node.output):
            for i, name in enumerate(seq):
                if name == old:
                    seq[i] = new
    for value in [*graph.input, *graph.output, *graph.value_info]:
        if value.name == old:
            value.name = new


def name_dynamic_axes(model: onnx.ModelProto, time_free: bool) -> None:
    """Give the free axes readable names: ``batch`` for axis 0 and, for sequence inputs, ``time`` for axis 1
    of the inputs and for the other free axes of the outputs (attention weights: (batch, time, time)).

    Where several inputs have a free time axis, each gets a name of its own (``q_time``, ``kv_time``): they may
    differ (a cross-attention's query and memory), and onnxruntime takes axes of one name to be of one size
    (it reuses buffers on that word). The outputs' other free axes then keep the names they have."""
    initializers = _initializer_names(model.graph)
    inputs = [v for v in model.graph.input if v.name not in initializers]
    timed = [v for v in inputs if len(v.type.tensor_type.shape.dim) >= 2]
    timed = (
        [v for v in timed if not v.type.tensor_type.shape.dim[1].HasField("dim_value")] if time_free else []
    )
    for value in inputs:
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_param = "batch"
        if value in timed:
            dims[1].dim_param = "time" if len(timed) == 1 else f"{value.name}_time"
    for value in model.graph.output:
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_param = "batch"
        for dim in list(dims)[1:] if len(timed) == 1 else []:
            if not dim.HasField("dim_value"):
                dim.dim_param = "time"


def drop_unused_opsets(model: onnx.ModelProto) -> None:
    """Drop opset imports of domains that no node uses (tf2onnx declares ``ai.onnx.ml`` regardless)."""
    used = {n.domain for n in _all_nodes(model.graph)}
    for opset in [o for o in model.opset_import if o.domain not in ("", "ai.onnx") and o.domain not in used]:
        model.opset_import.remove(opset)


def _takes_last_step(slice_node, initializers: dict) -> bool:
    """Whether a Slice of a (batch, time, features) tensor keeps exactly the last time step, for any length."""
    from onnx.reference import ReferenceEvaluator

    if any(i and i not in initializers for i in slice_node.input[1:]):
        return False
    node = onnx.helper.make_node("Slice", ["x", *slice_node.input[1:]], ["y"])
    consts = [initializers[i] for i in slice_node.input[1:] if i]
    x_info = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, None)
    y_info = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)
    g = onnx.helper.make_graph([node], "probe", [x_info], [y_info], consts)
    probe = onnx.helper.make_model(g, opset_imports=[onnx.helper.make_opsetid("", 17)])
    evaluator = ReferenceEvaluator(probe)
    for length in (1, 4, 9):
        x = np.arange(2 * length * 3, dtype=np.float32).reshape(2, length, 3)
        try:
            (y,) = evaluator.run(None, {"x": x})
        except (IndexError, ValueError):  # a Slice of a tensor of another rank (attention heads, say)
            return False
        if y.shape != (2, 1, 3) or not np.array_equal(y, x[:, -1:, :]):
            return False
    return True


def last_step_from_final_state(model: onnx.ModelProto) -> int:
    """Read ``h[:, -1, :]`` of a forward recurrent node's sequence from its final state ``Y_h`` instead.

    Pattern (tf2onnx's form of ``h_s[:, -1, :]`` after an RNN): ``Squeeze(Slice(Transpose(Squeeze(Y))), 1)``
    with the Slice keeping the last step; it becomes ``Squeeze(Y_h, 0)``. Only for one-direction nodes without
    ``sequence_lens`` (where the last output *is* the final state). Returns how many were rewritten.
    """
    graph = model.graph
    producers = _producers(graph)
    initializers = {t.name: t for t in graph.initializer}
    readers = consumers(graph)
    rewritten = 0
    for node in list(graph.node):
        if node.op_type != "Slice" or not _takes_last_step(node, initializers):
            continue
        transpose = producers.get(node.input[0])
        squeeze = producers.get(transpose.input[0]) if transpose is not None else None
        rnn = producers.get(squeeze.input[0]) if squeeze is not None else None
        if (
            rnn is None
            or transpose.op_type != "Transpose"
            or list(attr(transpose, "perm", [])) != [1, 0, 2]
            or squeeze.op_type != "Squeeze"
            or axes_of(squeeze, initializers) != [1]
            or rnn.op_type not in RECURRENT_OPS
            or rnn.output[0] != squeeze.input[0]
            or attr(rnn, "direction", b"forward") != b"forward"
            or (len(rnn.input) > 4 and rnn.input[4])
        ):
            continue
        users = readers.get(node.output[0], [])
        if not users or any(u.op_type != "Squeeze" or axes_of(u, initializers) != [1] for u in users):
            continue
        while len(rnn.output) < 2:
            rnn.output.append("")
        if not rnn.output[1]:
            rnn.output[1] = f"{rnn.name}_Y_h"
        axes = f"{rnn.name}_axes0"
        if axes not in initializers:
            initializers[axes] = numpy_helper.from_array(np.array([0], np.int64), axes)
            graph.initializer.append(initializers[axes])
        for user in users:
            user.input[0], user.input[1] = rnn.output[1], axes
        graph.node.remove(node)
        rewritten += 1
    if rewritten:
        prune(model)
    return rewritten


def save_basic(model: onnx.ModelProto, target: str, ort_format: bool = False) -> None:
    """Save ``model`` as onnxruntime's offline optimizer leaves it at the BASIC level (constant folding,
    redundant nodes, ``MatMul``+``Add`` -> ``Gemm``; standard operators only, unlike the EXTENDED and ALL
    levels, which insert ``com.microsoft`` ops), as ONNX or in onnxruntime's ORT format."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = target
    options.log_severity_level = 3
    if ort_format:
        options.add_session_config_entry("session.save_model_format", "ORT")
    ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def optimize_basic(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` after onnxruntime's BASIC level (see ``save_basic``), without the unused opset imports that
    onnxruntime declares. Returns a new model."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="edgeattn-opt-") as tmp:
        save_basic(model, f"{tmp}/basic.onnx")
        optimized = onnx.load(f"{tmp}/basic.onnx")
    drop_unused_opsets(optimized)
    optimized.ir_version = model.ir_version
    return optimized


def with_outputs(
    model: onnx.ModelProto, names, keep: bool = True, dtype: int | None = None
) -> onnx.ModelProto:
    """A copy of ``model`` whose graph also outputs the named tensors (graph inputs left out); with ``keep``
    False, only them. ``dtype``: their element type (``onnx.TensorProto.FLOAT``...) where the copy will be
    described, not only run (onnxruntime infers an untyped output's type)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    if not keep:
        del copy.graph.output[:]
    present = {i.name for i in copy.graph.input} | {o.name for o in copy.graph.output}
    for name in dict.fromkeys(names):
        if name in present:
            continue
        if dtype:
            copy.graph.output.append(onnx.helper.make_tensor_value_info(name, dtype, None))
        else:  # no type at all (an explicit UNDEFINED is refused)
            copy.graph.output.add().name = name
    return copy


def prune_dead(model: onnx.ModelProto) -> int:
    """Remove the nodes and initializers that no graph output needs. Returns how many nodes went."""
    graph = model.graph
    needed = {o.name for o in graph.output} | {i.name for i in graph.input}
    keep = []
    for node in reversed(graph.node):
        if any(o in needed for o in node.output):
            keep.append(node)
            needed.update(i for i in node.input if i)
    removed = len(graph.node) - len(keep)
    if removed:
        del graph.node[:]
        graph.node.extend(reversed(keep))
    for tensor in [t for t in graph.initializer if t.name not in needed]:
        graph.initializer.remove(tensor)
    return removed
