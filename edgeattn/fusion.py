"""Standard ONNX ops in place of the node chains tf2onnx writes for them.

Embedding indices: Keras 3's ``Embedding`` maps negative token ids to ``id + rows`` before its ``take`` (nine
nodes: casts, a comparison, a select built from products). ONNX ``Gather`` does exactly that itself. Where the
index of a ``Gather`` from a constant table is computed from one integer graph input alone, that computation
is run on every id in ``[-rows, rows)``; when it gives ``id`` (or ``id + rows`` for negative ids) for each of
them, the ``Gather`` reads the input directly.

``LayerNormalization``: tf2onnx writes Keras' ``LayerNormalization`` as the arithmetic of ``tf.nn.moments``
(13 nodes: two means, a difference, a square, a square root, a reciprocal and the affine part). ONNX has had
``LayerNormalization`` since opset 17, and onnxruntime runs it as one kernel. The chain is matched node by node
(each intermediate used only inside the chain), and the rewritten graph must give the same outputs as the
original on seeded inputs (within 1e-5: one kernel rounds differently from thirteen), or it is not used.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgeattn import graph

LAYER_NORM_OPSET = 17
TOLERANCE = 1e-5


def fuse_layer_norms(model: onnx.ModelProto, feeds: list[dict]) -> int:
    """Replace each matched moments chain by one ``LayerNormalization`` node; returns how many were fused
    (0 when the opset is below 17, nothing matched, or the outputs on ``feeds`` moved)."""
    if graph.opset_of(model) < LAYER_NORM_OPSET:
        return 0
    rewritten = onnx.ModelProto()
    rewritten.CopyFrom(model)
    g = rewritten.graph
    consumers = graph.consumers(g)
    constants = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    ranks = {name: len(shape) for name, shape in graph.inferred_shapes(rewritten).items()}
    fused = 0
    for node in list(g.node):
        match = _match(node, consumers, constants, ranks)
        if match is None:
            continue
        x, out, eps, gamma, beta, chain = match
        channels = gamma.size if gamma is not None else beta.size if beta is not None else None
        if channels is None:
            continue
        names = []
        for kind, value, default in (("scale", gamma, 1.0), ("bias", beta, 0.0)):
            name = f"{out}__ln_{kind}"
            array = value if value is not None else np.full(channels, default, np.float32)
            g.initializer.append(numpy_helper.from_array(array.astype(np.float32).reshape(-1), name))
            names.append(name)
        ln = helper.make_node(
            "LayerNormalization", [x, *names], [out], name=f"{out}__layer_norm", axis=-1, epsilon=float(eps)
        )
        position = min(list(g.node).index(n) for n in chain)
        for n in chain:
            g.node.remove(n)
        g.node.insert(position, ln)
        fused += 1
    from edgeattn.onnxfile import take_if_same

    return fused if fused and take_if_same(model, rewritten, feeds, TOLERANCE) else 0


def _is_last_axis_mean(node, ranks: dict, constants: dict) -> bool:
    rank = ranks.get(node.input[0])
    if node.op_type == "GlobalAveragePool":  # averages every axis after the second: the last one of a rank-3
        return rank == 3
    if node.op_type != "ReduceMean" or rank is None:
        return False
    keep = next((a.i for a in node.attribute if a.name == "keepdims"), 1)
    axes = next((list(a.ints) for a in node.attribute if a.name == "axes"), None)
    if axes is None and len(node.input) > 1 and node.input[1] in constants:
        axes = constants[node.input[1]].tolist()
    return keep == 1 and axes is not None and [a % rank for a in axes] == [rank - 1]


def _affine(name: str, op: str, consumers: dict, constants: dict, chain: list):
    """``name`` through an optional ``op`` with a constant (LayerNormalization's scale or center, which Keras
    leaves out with ``scale=False``/``center=False``): the tensor after it, and the constant or None."""
    users = consumers.get(name, [])
    if len(users) == 1 and users[0].op_type == op and graph.other_input(users[0], name) in constants:
        chain.append(users[0])
        return users[0].output[0], constants[graph.other_input(users[0], name)]
    return name, None


def _match(mean, consumers, constants, ranks):
    """The moments chain that starts at ``mean`` (a last-axis mean of x), as (x, output, epsilon, gamma,
    beta, nodes), or None."""
    if mean.op_type not in {"GlobalAveragePool", "ReduceMean"} or not _is_last_axis_mean(
        mean, ranks, constants
    ):
        return None
    x, m = mean.input[0], mean.output[0]
    users = consumers.get(m, [])
    sub = next((u for u in users if u.op_type == "Sub" and list(u.input) == [x, m]), None)
    neg = next((u for u in users if u.op_type == "Neg"), None)
    if sub is None or neg is None or len(users) != 2:
        return None
    square = graph.only_consumer(consumers, sub.output[0], "Mul")
    if square is None or list(square.input) != [sub.output[0]] * 2:
        return None
    var = graph.only_consumer(consumers, square.output[0], mean.op_type)
    if var is None or not _is_last_axis_mean(var, ranks, constants):
        return None
    add_eps = graph.only_consumer(consumers, var.output[0], "Add")
    eps = constants.get(graph.other_input(add_eps, var.output[0])) if add_eps is not None else None
    if eps is None or eps.size != 1:
        return None
    sqrt = graph.only_consumer(consumers, add_eps.output[0], "Sqrt")
    recip = graph.only_consumer(consumers, sqrt.output[0], "Reciprocal") if sqrt is not None else None
    if recip is None:
        return None
    chain = [mean, sub, square, var, add_eps, sqrt, recip, neg]
    scale, gamma = _affine(recip.output[0], "Mul", consumers, constants, chain)
    users = consumers.get(scale, [])
    neg_mul = next((u for u in users if u.op_type == "Mul" and neg.output[0] in u.input), None)
    x_mul = next((u for u in users if u.op_type == "Mul" and x in u.input and u is not neg_mul), None)
    if neg_mul is None or x_mul is None or len(users) != 2 or consumers.get(neg.output[0]) != [neg_mul]:
        return None
    chain += [neg_mul, x_mul]
    shift, beta = _affine(neg_mul.output[0], "Add", consumers, constants, chain)
    final = graph.only_consumer(consumers, x_mul.output[0], "Add")
    if final is None or graph.other_input(final, x_mul.output[0]) != shift or consumers.get(shift) != [final]:
        return None
    chain.append(final)
    per_channel = [v for v in (gamma, beta) if v is not None]
    if any(len(c.output) != 1 for c in chain) or any(
        v.ndim == 0 or v.size != v.shape[-1] for v in per_channel
    ):
        return None  # scale and shift must be per channel: (C,) or (1, ..., 1, C)
    return x, final.output[0], float(eps.reshape(-1)[0]), gamma, beta, chain


def plain_gather_indices(model: onnx.ModelProto) -> int:
    """Let each ``Gather`` from a constant table read its integer graph input directly where the index
    computation in between only does what ``Gather`` does itself (see the module docstring). Returns how many
    were rewritten."""
    g = model.graph
    inputs = {i.name: i for i in g.input if i.type.tensor_type.elem_type in graph.INTEGER_TYPES}
    tables = {t.name: int(t.dims[0]) for t in g.initializer if len(t.dims) >= 1}
    producers = {o: n for n in g.node for o in n.output}
    constants = {t.name for t in g.initializer}
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type for v in inferred.graph.value_info}
    rewritten = 0
    for node in g.node:
        if node.op_type != "Gather" or node.input[0] not in tables or node.input[1] not in types:
            continue
        if any(a.name == "axis" and a.i != 0 for a in node.attribute):
            continue
        chain, sources = _ancestors(node.input[1], producers, constants)
        if len(sources) != 1 or next(iter(sources)) not in inputs or not chain:
            continue
        source = next(iter(sources))
        index = helper.make_tensor_value_info(node.input[1], types[node.input[1]], None)
        if _maps_ids_like_gather(model, chain, inputs[source], index, tables[node.input[0]]):
            node.input[1] = source
            rewritten += 1
    if rewritten:
        graph.prune_dead(model)
    return rewritten


def _ancestors(name: str, producers: dict, constants: set) -> tuple[list, set]:
    """The nodes that compute ``name`` (in graph order) and the non-constant tensors they start from."""
    nodes, sources, todo, seen = [], set(), [name], set()
    while todo:
        current = todo.pop()
        if current in seen or current in constants or not current:
            continue
        seen.add(current)
        node = producers.get(current)
        if node is None:
            sources.add(current)
            continue
        nodes.append(node)
        todo.extend(node.input)
    order = {id(n): i for i, n in enumerate(producers.values())}
    return sorted({id(n): n for n in nodes}.values(), key=lambda n: order[id(n)]), sources


def _maps_ids_like_gather(model, chain: list, source, index, rows: int) -> bool:
    """Whether ``chain`` turns every id in [-rows, rows) into the index Gather would use for it."""
    from edgeattn.onnxfile import open_session

    used = {i for n in chain for i in n.input}
    g = helper.make_graph(
        chain,
        "index",
        [helper.make_tensor_value_info(source.name, source.type.tensor_type.elem_type, None)],
        [index],
        [t for t in model.graph.initializer if t.name in used],
    )
    probe = helper.make_model(g, opset_imports=list(model.opset_import), ir_version=model.ir_version)
    rank = len(source.type.tensor_type.shape.dim)
    width = next((d.dim_value for d in reversed(source.type.tensor_type.shape.dim) if d.dim_value), 1)
    ids = np.arange(-rows, rows)
    ids = np.concatenate([ids, np.zeros((-len(ids)) % width, ids.dtype)])
    dtype = onnx.helper.tensor_dtype_to_np_dtype(source.type.tensor_type.elem_type)
    shape = (-1,) + (1,) * max(rank - 2, 0) + ((width,) if rank >= 2 else ())
    # the ids in order and reversed: a computation of positions (cumsum of ones) matches the first alone
    for x in (ids.astype(dtype).reshape(shape), ids[::-1].astype(dtype).reshape(shape)):
        try:
            (got,) = open_session(probe, ["cpu"], threads=1).run(None, {source.name: x})
        except Exception:  # a computation this probe cannot run (a shape it cannot take): leave it as it is
            return False
        want = np.where(x < 0, x.astype(np.int64) + rows, x)
        if got.shape != x.shape or not np.array_equal(got.astype(np.int64), want):
            return False
    return True
