"""ONNX graph facts and structure checks; nothing here changes a model. Needs only ``onnx`` and numpy.

- ``summarize``: op histogram, node and parameter counts, opset, domains.
- ``check_structure``: what an edgeattn file must be (checker, standard domains, fused recurrent layers,
  dynamic batch axis); returns a list of problems.
- ``opset_of``, ``vocab_size``, ``inferred_shapes``: what a model declares, indexes and infers.
- ``attr``, ``axes_of``, ``consumers``, ``only_consumer``, ``other_input``: node look-ups for the rewrites.
- The op families: ``RECURRENT_OPS``, ``LOOP_OPS``, ``INTEGER_TYPES``, ``STANDARD_DOMAINS``.

The clean-up passes that use them are in ``edgeattn.graphs.graph``, which imports them back: every name here
is importable from there as well.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from edgeattn.core.errors import first_line

STANDARD_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml"})
RECURRENT_OPS = frozenset({"LSTM", "GRU", "RNN"})
LOOP_OPS = frozenset({"Loop", "Scan"})


@dataclass(frozen=True)
class GraphSummary:
    nodes: int
    op_histogram: dict[str, int]
    parameters: int
    opset: int
    domains: tuple[str, ...]
    inputs: tuple[tuple[str, tuple, str], ...]
    outputs: tuple[tuple[str, tuple, str], ...]


def _dims(value_info) -> tuple:
    shape = value_info.type.tensor_type.shape
    return tuple(d.dim_param or (d.dim_value if d.HasField("dim_value") else "?") for d in shape.dim)


def _dtype(value_info) -> str:
    return onnx.helper.tensor_dtype_to_np_dtype(value_info.type.tensor_type.elem_type).name


def opset_of(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def summarize(model: onnx.ModelProto) -> GraphSummary:
    graph = model.graph
    ops = Counter(
        (f"{n.domain}:{n.op_type}" if n.domain not in STANDARD_DOMAINS else n.op_type)
        for n in _all_nodes(graph)
    )
    return GraphSummary(
        nodes=len(graph.node),
        op_histogram=dict(sorted(ops.items(), key=lambda kv: (-kv[1], kv[0]))),
        parameters=int(sum(np.prod(t.dims, dtype=np.int64) for t in graph.initializer)),
        opset=opset_of(model),
        domains=tuple(sorted({o.domain or "ai.onnx" for o in model.opset_import})),
        inputs=tuple(
            (i.name, _dims(i), _dtype(i)) for i in graph.input if i.name not in _initializer_names(graph)
        ),
        outputs=tuple((o.name, _dims(o), _dtype(o)) for o in graph.output),
    )


INTEGER_TYPES = frozenset(
    {
        onnx.TensorProto.INT8, onnx.TensorProto.INT16, onnx.TensorProto.INT32, onnx.TensorProto.INT64,
        onnx.TensorProto.UINT8, onnx.TensorProto.UINT16, onnx.TensorProto.UINT32, onnx.TensorProto.UINT64,
    }
)  # fmt: skip


def vocab_size(model: onnx.ModelProto) -> int | None:
    """The fewest rows of the embedding tables that the model's integer inputs index (``Gather`` on a
    constant 2-D table with indices computed from an integer graph input): token ids below it are valid for
    every table."""
    reached = {i.name for i in model.graph.input if i.type.tensor_type.elem_type in INTEGER_TYPES}
    tables = {t.name: int(t.dims[0]) for t in model.graph.initializer if len(t.dims) == 2}
    rows = []
    for node in model.graph.node:  # in topological order
        if any(name in reached for name in node.input):
            reached.update(node.output)
            if node.op_type == "Gather" and node.input[0] in tables and node.input[1] in reached:
                rows.append(tables[node.input[0]])
    return min(rows) if rows else None


def _initializer_names(graph) -> set[str]:
    return {t.name for t in graph.initializer}


def _all_nodes(graph):
    """Every node, including those in subgraphs (Loop/Scan/If bodies)."""
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _all_nodes(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    yield from _all_nodes(g)


def check_structure(
    model: onnx.ModelProto,
    expect_recurrent: int | None = None,
    expect_outputs: list[str] | None = None,
) -> list[str]:
    """Problems that make ``model`` unfit for an edgeattn file (empty when it is fit).

    Checks: ``onnx.checker`` (full, with shape inference); every node and opset import in a standard domain;
    no ``Loop``/``Scan`` (recurrent layers must be fused ``LSTM``/``GRU``/``RNN`` nodes); at least
    ``expect_recurrent`` fused recurrent nodes; a dynamic batch axis on every input and output; the expected
    output names, in order.
    """
    problems: list[str] = []
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:  # onnx raises ValidationError and InferenceError
        problems.append(f"onnx.checker: {first_line(exc)}")
    for opset in model.opset_import:
        if opset.domain not in STANDARD_DOMAINS:
            problems.append(f"imports the non-standard opset domain {opset.domain!r}")
    for node in _all_nodes(model.graph):
        if node.domain not in STANDARD_DOMAINS:
            problems.append(
                f"node {node.name!r} is {node.domain}:{node.op_type}, not a standard ONNX operator"
            )
        elif node.op_type in LOOP_OPS:
            problems.append(
                f"node {node.name!r} is a {node.op_type}: a recurrent layer was not fused into an "
                "LSTM/GRU/RNN node"
            )
    if expect_recurrent is not None:
        fused = sum(1 for n in model.graph.node if n.op_type in RECURRENT_OPS)
        if fused < expect_recurrent:
            problems.append(f"expected at least {expect_recurrent} fused recurrent node(s), found {fused}")
    initializers = _initializer_names(model.graph)
    for value in [*model.graph.input, *model.graph.output]:
        if value.name in initializers:
            continue
        dims = _dims(value)
        if not dims or isinstance(dims[0], int):
            problems.append(
                f"{value.name!r} has a fixed batch axis {dims[:1]}; the batch axis must be dynamic"
            )
    if expect_outputs is not None:
        names = [o.name for o in model.graph.output]
        if names != list(expect_outputs):
            problems.append(f"outputs are {names}, expected {list(expect_outputs)}")
    return problems


# -- node look-ups ----------------------------------------------------------------------------------------


def axes_of(node, initializers: dict) -> list[int] | None:
    """A Squeeze's or Unsqueeze's constant axes (an attribute before opset 13, an initializer input from 13
    on), or None."""
    if len(node.input) > 1:
        tensor = initializers.get(node.input[1])
        return None if tensor is None else [int(a) for a in np.ravel(numpy_helper.to_array(tensor))]
    axes = attr(node, "axes")
    return None if axes is None else [int(a) for a in axes]


def attr(node, name: str, default=None):
    """A node's attribute value, or ``default``."""
    found = [a for a in node.attribute if a.name == name]
    return onnx.helper.get_attribute_value(found[0]) if found else default


def consumers(graph) -> dict[str, list]:
    """For each tensor, the nodes that read it (a node that reads a tensor twice, x * x, counts once)."""
    found: dict[str, list] = {}
    for node in graph.node:
        for name in dict.fromkeys(node.input):
            found.setdefault(name, []).append(node)
    return found


def only_consumer(readers: dict, name: str, op: str):
    """The single node that reads ``name`` (``readers`` from ``consumers``), if it is an ``op``; else None."""
    users = readers.get(name, [])
    return users[0] if len(users) == 1 and users[0].op_type == op else None


def other_input(node, name: str) -> str:
    """A two-input node's input that is not ``name``."""
    return node.input[1] if node.input[0] == name else node.input[0]


def inferred_shapes(model: onnx.ModelProto) -> dict[str, tuple]:
    """Each tensor's shape as onnx's shape inference sees it: an int per known axis, None per free one."""
    inferred = onnx.shape_inference.infer_shapes(model)
    values = list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)
    return {
        v.name: tuple(d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim)
        for v in values
        if v.type.tensor_type.HasField("shape")
    }
