"""Products on the rows as they are: no Reshape to flatten them and none to restore them.

Rows flattened for a product: tf2onnx writes a Dense on a (batch, time, features) tensor as ``Reshape(x,
[-1, D]) -> MatMul(W) (or Gemm) -> Reshape((batch, time, N))``, attention's batched products over (batch *
heads, ...) the same way; restoring the rows takes a shape computed on every call (Shape, Gather, Concat: the
product no longer holds batch and time apart). ``unflatten_rows`` lets the nodes between work on the
unflattened tensor instead: every node there treats the leading axis as rows it never mixes (MatMul with a
constant matrix or a second unflattened operand, Gemm written as MatMul + Add, elementwise arithmetic whose
other operand does not span the rows, activations, Transposes that keep the rows first, softmaxes and
reductions over other axes), so it works the same on (a, b, ...) rows as on (a * b, ...). The Reshapes
after them then read the unflattened tensor: where its shape is theirs they go; else their target is a
constant.

Which axes are rows, and what each target is, is observed (edgeattn.graphs.shapes): the graph is run on inputs of
several batch sizes and lengths. A family of flattening Reshapes (the same rows) is rewritten where the graph
then has fewer nodes, and all only if the rewritten graph gives the original's outputs on a size they were not
derived from (within 1e-5: a Gemm becomes MatMul + Add, which rounds otherwise).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgeattn.graphs import graph, layouts, onnxfile, shapes

TOLERANCE = 1e-5
UNARY = frozenset(
    "Abs Cast Ceil Clip Cos Dropout Elu Erf Exp Floor Gelu HardSigmoid HardSwish Identity IsInf IsNaN "
    "LeakyRelu Log Mish Neg Not Reciprocal Relu Round Selu Sigmoid Sign Sin Softplus Softsign Sqrt Tanh "
    "ThresholdedRelu".split()
)
BROADCASTING = frozenset(
    "Add And Div Equal Greater GreaterOrEqual Less LessOrEqual Max Min Mod Mul Or Pow PRelu Sub Sum Where "
    "Xor".split()
)
AXIS_OPS = frozenset({"Softmax", "LogSoftmax", "Hardmax", "LayerNormalization"})
SOFTMAX_LAST_AXIS_OPSET = 13  # Softmax's axis defaults to -1 (not 1) from opset 13 on


def unflatten_rows(model: onnx.ModelProto, vocab: int | None, length: int | None) -> int:
    """Let the nodes between a Reshape that flattens leading axes into rows and the Reshapes after them work
    on the unflattened tensor (see the module docstring). Returns how many flattening Reshapes were taken out
    (0 when none, or the check failed and nothing changed)."""
    feeds, checks = shapes.probe_feeds(model, vocab, length)
    seen = shapes.observe(model, feeds)
    families: dict = {}
    for node in model.graph.node:
        rows = _flattened_rows(node, seen) if node.op_type == "Reshape" else None
        if rows is not None:
            families.setdefault(rows, []).append(node.output[0])
    rewritten = layouts.copied(model)
    done = 0
    for rows, flattened in families.items():
        trial = layouts.copied(rewritten)
        fewer = _unflatten(trial, set(flattened), rows, seen) and layouts.pruned_size(trial) < len(
            rewritten.graph.node
        )
        if fewer:
            rewritten, done = trial, done + len(flattened)
    if not done:
        return 0
    return done if onnxfile.take_if_same(model, rewritten, checks + feeds[:1], TOLERANCE) else 0


def _flattened_rows(node, seen: dict):
    """For a Reshape whose output's first axis is its input's first k >= 2 axes flattened (on every run): the
    shapes of those k axes, one tuple per run; else None."""
    source, out = seen.get(node.input[0]), seen.get(node.output[0])
    if not source or not out or len(out[0]) < 2 or len({len(s) for s in source}) != 1:
        return None
    for k in range(2, len(source[0])):
        if all(int(np.prod(s[:k])) == o[0] for s, o in zip(source, out)):
            return tuple(s[:k] for s in source)
    return None


def _unflatten(model: onnx.ModelProto, flattened: set, rows: tuple, seen: dict) -> bool:
    """Rewrite one family of flattening Reshapes (the same rows) in place; whether any Reshape after them now
    reads an unflattened tensor. The flattened nodes stay for their other readers (pruned where none)."""
    g = model.graph
    k = len(rows[0])
    opset = graph.opset_of(model)
    twin: dict[str, str] = {}  # a flattened tensor -> the same tensor with its rows unflattened
    done = 0
    for node in list(g.node):
        if node.op_type == "Reshape" and node.output[0] in flattened:
            source = node.input[0]
            wanted = tuple(r + o[1:] for r, o in zip(rows, seen[node.output[0]]))
            if wanted == seen[source]:
                twin[node.output[0]] = source
                continue
            target = layouts.fixed_target(wanted, seen[source])
            if target is not None:
                name = layouts.add_node(
                    g, node, "Reshape", [source, layouts.add_constant(g, node, target)], wanted, seen
                )
                twin[node.output[0]] = name
            continue
        if not any(i in twin for i in node.input):
            continue
        if node.op_type == "Reshape" and node.input[0] in twin:
            made = _row_reshape(g, node, twin[node.input[0]], seen, rows)
            if made is None:
                done += _retarget(g, node, twin, seen)
                continue
        else:
            made = _row_twin(g, node, twin, seen, rows, k, opset)
        if made is not None:
            twin[node.output[0]] = made
            done += 1
    return done > 0


def _row_reshape(g, node, source: str, seen: dict, rows: tuple) -> str | None:
    """A Reshape that keeps the rows (its output's first axis is its input's), on the unflattened rows."""
    out, before = seen.get(node.output[0]), seen[node.input[0]]
    if not out or len(out[0]) < 2 or any(o[0] != b[0] for o, b in zip(out, before)):
        return None
    wanted = tuple(r + o[1:] for r, o in zip(rows, out))
    if wanted == seen[source]:
        return source
    target = layouts.fixed_target(wanted, seen[source])
    if target is None:
        return None
    return layouts.add_node(g, node, "Reshape", [source, layouts.add_constant(g, node, target)], wanted, seen)


def _retarget(g, node, twin: dict, seen: dict) -> int:
    """Let a Reshape after the products read their unflattened result: removed where that has its output's
    shape, else given a constant target. Returns 1 if done."""
    out, source = node.output[0], twin[node.input[0]]
    if seen[source] == seen[out] and layouts.bypass(g, [node], out, source):
        if any(o.name == out for o in g.output):  # source took out's name
            twin.update({k: out for k, v in twin.items() if v == source})
        return 1
    target = layouts.fixed_target(seen[out], seen[source])
    if target is None:
        return 0
    node.input[0], node.input[1] = source, layouts.add_constant(g, node, target)
    return 1


def _row_twin(g, node, twin: dict, seen: dict, rows: tuple, k: int, opset: int) -> str | None:
    """The node's twin on unflattened rows (its output's name), inserted after it, where the node never mixes
    its rows; else None."""
    op, out = node.op_type, node.output[0]
    if len(node.output) != 1 or out not in seen:
        return None
    shape = seen[out]
    rank = len(shape[0])
    wanted = tuple(r + s[1:] for r, s in zip(rows, shape))
    inputs = [twin.get(i, i) for i in node.input]
    constants = {t.name: numpy_helper.to_array(t) for t in g.initializer if t.name in node.input}
    if any(i and i not in seen and i not in constants for i in node.input):
        return None
    ranks = {i: len(seen[i][0]) if i in seen else constants[i].ndim for i in node.input if i}
    if op in UNARY and node.input[0] in twin:
        return layouts.add_node(g, node, op, inputs, wanted, seen, node.attribute)
    if op in BROADCASTING:
        for i in node.input:
            if i in twin and (ranks[i] != rank or any(s[0] != o[0] for s, o in zip(seen[i], shape))):
                return None  # a flattened operand that does not give the output its rows
            if i not in twin and ranks[i] >= rank and not _one_row(i, seen, constants):
                return None  # an operand that spans the rows
        return layouts.add_node(g, node, op, inputs, wanted, seen, node.attribute)
    if op == "MatMul":
        a, b = node.input
        if a in twin and b in twin and ranks[a] >= 3 and ranks[b] >= 3:
            return layouts.add_node(g, node, op, inputs, wanted, seen)
        if (a in twin and b not in twin and ranks[b] == 2) or (
            b in twin and a not in twin and ranks[a] <= 2 and ranks[b] >= 3
        ):
            return layouts.add_node(g, node, op, inputs, wanted, seen)
        return None
    if op == "Gemm":
        return _gemm_twin(g, node, twin, seen, wanted, constants)
    if op == "Transpose":
        perm = graph.attr(node, "perm")
        if node.input[0] not in twin or not perm or perm[0] != 0:
            return None
        new = list(range(k)) + [p + k - 1 for p in perm[1:]]
        return layouts.add_node(g, node, op, inputs, wanted, seen, [helper.make_attribute("perm", new)])
    if op in AXIS_OPS and node.input[0] in twin:
        last = op == "LayerNormalization" or opset >= SOFTMAX_LAST_AXIS_OPSET
        axis = graph.attr(node, "axis", -1 if last else 1)
        if axis == 0 or axis < -(rank - 1):
            return None
        attributes = [a for a in node.attribute if a.name != "axis"]
        attributes.append(helper.make_attribute("axis", axis if axis < 0 else axis + k - 1))
        return layouts.add_node(g, node, op, inputs, wanted, seen, attributes)
    if op in ("Squeeze", "Unsqueeze") or op.startswith("Reduce"):
        return _axes_twin(g, node, twin, seen, wanted, constants, k)
    return None


def _one_row(name: str, seen: dict, constants: dict) -> bool:
    """Whether an operand of the output's rank has one row (so it broadcasts over any rows)."""
    if name in constants:
        return constants[name].shape[0] == 1
    return all(s[0] == 1 for s in seen.get(name, ((0,),)))


def _gemm_twin(g, node, twin, seen, wanted, constants) -> str | None:
    """``Gemm(a, B, C)`` (a the flattened rows, B and C constant) as ``MatMul(a', alpha * B) + beta * C``."""
    a, b = node.input[0], node.input[1]
    c = node.input[2] if len(node.input) > 2 and node.input[2] else None
    if a not in twin or b not in constants or graph.attr(node, "transA", 0) or (c and c not in constants):
        return None
    weight = constants[b].T if graph.attr(node, "transB", 0) else constants[b]
    weight = (graph.attr(node, "alpha", 1.0) * weight).astype(constants[b].dtype)
    bias = None
    if c is not None and graph.attr(node, "beta", 1.0) != 0:
        bias = (graph.attr(node, "beta", 1.0) * constants[c]).astype(constants[c].dtype)
        if bias.ndim > 2 or (bias.ndim == 2 and bias.shape[0] != 1):
            return None  # a bias per row
    product = layouts.add_node(
        g, node, "MatMul", [twin[a], layouts.add_constant(g, node, weight, "weight")], wanted, seen
    )
    if bias is None:
        return product
    after = next(n for n in g.node if n.output[0] == product)
    return layouts.add_node(
        g, after, "Add", [product, layouts.add_constant(g, node, bias, "bias")], wanted, seen, suffix="bias"
    )


def _axes_twin(g, node, twin, seen, wanted, constants, k) -> str | None:
    """A Squeeze, Unsqueeze or reduction over axes other than the rows, its axes moved past the new ones."""
    if node.input[0] not in twin or len(node.input) > 2:
        return None
    axes = graph.attr(node, "axes")
    if axes is None and len(node.input) > 1 and node.input[1] in constants:
        axes = constants[node.input[1]].reshape(-1).tolist()
    if not axes:
        return None
    rank = len(seen[node.output[0]][0]) if node.op_type == "Unsqueeze" else len(seen[node.input[0]][0])
    normal = [a % rank for a in axes]
    if 0 in normal:
        return None
    moved = [a + k - 1 for a in normal]
    attributes = [a for a in node.attribute if a.name != "axes"]
    inputs = [twin[node.input[0]]]
    if len(node.input) > 1:
        inputs.append(layouts.add_constant(g, node, np.array(moved, np.int64), "axes"))
    else:
        attributes.append(helper.make_attribute("axes", moved))
    return layouts.add_node(g, node, node.op_type, inputs, wanted, seen, attributes)
