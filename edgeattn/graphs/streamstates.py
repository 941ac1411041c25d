"""A fused recurrent node's state as graph inputs and outputs: what makes a step or stateful model carry it.

``expose`` gives a fused ``LSTM``/``GRU``/``RNN`` node its initial state from graph inputs (``lstm/h``, ``lstm/c``
of shape (batch, units), one per direction) and makes its final state graph outputs (``lstm/h_next``, ...):
an ``Unsqueeze`` (a ``Concat`` of two for a bidirectional node) in front of ``initial_h``/``initial_c``, a
``Squeeze`` (a ``Split`` for two directions) behind ``Y_h``/``Y_c``. The node itself stays one node.
Also here: the metadata key, and readable names for the free axes of a stream model's inputs and outputs.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

STREAM_KEY = "edgeattn.stream"
# ONNX slots of each state: (initial state input, final state output)
_SLOTS = {"h": (5, 1), "c": (6, 2)}


def expose(proto: onnx.ModelProto, node_name: str, states: list[list[tuple[str, str, int]]]) -> None:
    """Wire the state of the fused node ``node_name``: ``states[d]`` lists, for direction ``d``, each state as
    (``h`` or ``c``, graph input name, units); the graph output is the input name + ``_next``."""
    graph = proto.graph
    node = next(n for n in graph.node if n.name == node_name)
    index = list(graph.node).index(node)
    opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    before, after = [], []
    for role in [s[0] for s in states[0]]:
        slot_in, slot_out = _SLOTS[role]
        names = [next(s for s in direction if s[0] == role)[1] for direction in states]
        units = next(s for s in states[0] if s[0] == role)[2]
        unsqueezed = []
        for name in names:
            graph.input.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", units]))
            unsqueezed.append(f"{name}/unsqueezed")
            before.append(_axis_node("Unsqueeze", name, unsqueezed[-1], graph, opset))
        initial = unsqueezed[0]
        if len(names) > 1:
            initial = f"{node_name}/initial_{role}"
            before.append(helper.make_node("Concat", unsqueezed, [initial], axis=0, name=f"{initial}/concat"))
        while len(node.input) <= slot_in:
            node.input.append("")
        node.input[slot_in] = initial
        while len(node.output) <= slot_out:
            node.output.append("")
        final = node.output[slot_out] or f"{node_name}/Y_{role}"
        node.output[slot_out] = final
        parts = [final]
        if len(names) > 1:
            parts = [f"{final}/{d}" for d in range(len(names))]
            after.append(helper.make_node("Split", [final], parts, axis=0, name=f"{final}/split",
                                          **({"num_outputs": len(names)} if opset >= 18 else {})))  # fmt: skip
        for name, part in zip(names, parts):
            after.append(_axis_node("Squeeze", part, f"{name}_next", graph, opset))
            graph.output.append(
                helper.make_tensor_value_info(f"{name}_next", TensorProto.FLOAT, ["batch", units])
            )
    for offset, new in enumerate(before):
        graph.node.insert(index + offset, new)
    position = index + len(before) + 1
    for offset, new in enumerate(after):
        graph.node.insert(position + offset, new)


def _axis_node(op: str, source: str, target: str, graph, opset: int) -> onnx.NodeProto:
    """``Unsqueeze``/``Squeeze`` of axis 0 (the axes as an input from opset 13, an attribute before)."""
    if opset < 13:
        return helper.make_node(op, [source], [target], axes=[0], name=f"{target}/{op.lower()}")
    axes = "stream/axis0"
    if not any(t.name == axes for t in graph.initializer):
        graph.initializer.append(numpy_helper.from_array(np.array([0], np.int64), axes))
    return helper.make_node(op, [source, axes], [target], name=f"{target}/{op.lower()}")


def name_axes(proto: onnx.ModelProto, meta: dict, steps: int | None) -> None:
    """Readable axes for a stream model's free axes that tf2onnx left unnamed: a growing state's ``past`` (and
    ``past_next``, one longer, on its output); a data output's time axis: 1 in a step model, ``steps`` (or
    ``time``) in a stateful one."""
    grows = {s["input"]: "past" for s in meta["states"] if s["grows"]}
    grows.update({s["output"]: "past_next" for s in meta["states"] if s["grows"]})
    time = 1 if meta["kind"] == "step" else (steps or "time")
    for value in [*proto.graph.input, *proto.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if len(dims) < 2 or dims[1].HasField("dim_value"):
            continue
        if value.name in grows:
            dims[1].dim_param = grows[value.name]
        elif value.name in meta["outputs"] and len(dims) >= 3:
            if isinstance(time, int):
                dims[1].dim_value = time
            else:
                dims[1].dim_param = time
