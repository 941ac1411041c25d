"""Fewer kernels for two product shapes that Keras attention layers give tf2onnx.

After a recurrent layer, a small model's time goes to the number of kernels more than to their arithmetic
(at batch 1 an onnxruntime kernel launch costs about what a 64x64 product does). Two shapes are common after
an LSTM and have equivalents with fewer kernels:

A Dense over a concatenation, ``Concat([a, b], axis=-1) -> MatMul(W) (-> Add(bias))``: the product of a
concatenation is the sum of its parts' products, ``a @ W[:na] + b @ W[na:]``, so it is written
``Gemm(a, Wa, C=b @ Wb + bias)``: no Concat (and no copy of both parts), and onnxruntime fuses the activation
that follows a Gemm (tanh, relu, sigmoid) into it.

Attention scores as a column, ``MatMul(X, Unsqueeze(u, -1)) -> Squeeze(-1) -> Softmax`` and, for the weighted
sum, ``Unsqueeze(w, 1) -> MatMul(., X)``: the same scores as a row, ``MatMul(Unsqueeze(u, 1), X^T)``, whose
Softmax over the last axis feeds the weighted sum directly (onnxruntime folds the transpose into the product).
The Squeeze and the Unsqueeze go; where the weights are also a graph output, one Squeeze gives them. Where the
query is a product of an LSTM's final state (``MatMul(Squeeze(Y_h, 0), W)``), it is made (batch, 1, H) by a
transpose that onnxruntime also folds into the product.

A rewritten graph must give the original's outputs on seeded inputs (within 1e-5: sums in another order round
differently), or it is not used.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgeattn.graphs import graph

TOLERANCE = 1e-5
AXES_AS_INPUT_OPSET = 13  # Squeeze/Unsqueeze take their axes as an input from opset 13 on


def split_concat_products(model: onnx.ModelProto, feeds: list[dict]) -> int:
    """Write each Dense over a two-part concatenation as a Gemm of the parts (see the module docstring).
    Returns how many were rewritten (0 when none matched or the outputs on ``feeds`` moved)."""
    rewritten = _copy(model)
    g = rewritten.graph
    consumers = graph.consumers(g)
    constants = {t.name: t for t in g.initializer}
    shapes = graph.inferred_shapes(rewritten)
    done = 0
    for concat in [n for n in g.node if n.op_type == "Concat" and len(n.input) == 2]:
        parts = [shapes.get(name) for name in concat.input]
        if any(p is None or len(p) != 2 or not isinstance(p[1], int) for p in parts):
            continue
        if graph.attr(concat, "axis", 0) % 2 != 1:
            continue
        product = graph.only_consumer(consumers, concat.output[0], "MatMul")
        if product is None or product.input[0] != concat.output[0] or product.input[1] not in constants:
            continue
        weight = numpy_helper.to_array(constants[product.input[1]])
        if weight.ndim != 2 or weight.shape[0] != parts[0][1] + parts[1][1]:
            continue
        removed, out, bias = [concat, product], product.output[0], None
        add = graph.only_consumer(consumers, out, "Add")
        if add is not None and graph.other_input(add, out) in constants:
            value = numpy_helper.to_array(constants[graph.other_input(add, out)])
            if value.size == weight.shape[1] and value.ndim in (1, 2) and value.shape[-1] == weight.shape[1]:
                removed, out, bias = [*removed, add], add.output[0], value.reshape(-1).astype(weight.dtype)
        first, second = f"{out}__first_part", f"{out}__second_part"
        g.initializer.extend(
            [
                numpy_helper.from_array(weight[: parts[0][1]], first),
                numpy_helper.from_array(weight[parts[0][1] :], second),
            ]
        )
        rest = [concat.input[1], second]
        if bias is not None:
            g.initializer.append(numpy_helper.from_array(bias, f"{out}__bias"))
            rest.append(f"{out}__bias")
        nodes = [
            helper.make_node(
                "Gemm" if bias is not None else "MatMul", rest, [f"{out}__rest"], name=f"{out}__rest"
            ),
            helper.make_node("Gemm", [concat.input[0], first, f"{out}__rest"], [out], name=f"{out}__gemm"),
        ]
        _replace(g, removed, nodes, at=concat)
        consumers = graph.consumers(g)
        done += 1
    return _keep_if_same(model, rewritten, done, feeds)


def row_scores(model: onnx.ModelProto, feeds: list[dict]) -> int:
    """Compute attention scores as rows (see the module docstring). Returns how many softmaxes were rewritten
    (0 when none matched or the outputs on ``feeds`` moved)."""
    rewritten = _copy(model)
    g = rewritten.graph
    opset = graph.opset_of(rewritten)
    shapes = graph.inferred_shapes(rewritten)
    done = 0
    for softmax in [n for n in g.node if n.op_type == "Softmax"]:
        consumers, producers = graph.consumers(g), {o: n for n in g.node for o in n.output}
        constants = {t.name: t for t in g.initializer}
        match = _column_scores(softmax, consumers, producers, constants, shapes, opset)
        if match is None:
            continue
        unsqueeze, product, squeeze, query, keys = match
        weights = softmax.output[0]
        s = product.output[0]
        keys_t, perm = keys, [0, 2, 1]
        before = producers.get(keys)
        if before is not None and before.op_type == "Transpose":  # one transpose, from the source
            keys_t, perm = before.input[0], [graph.attr(before, "perm")[i] for i in perm]
        row = f"{weights}__row"
        nodes = [
            *_row_query(g, query, f"{s}__row_query", consumers, producers, constants, shapes, opset),
            helper.make_node("Transpose", [keys_t], [f"{s}__keys_t"], name=f"{s}__keys_t", perm=perm),
            helper.make_node("MatMul", [f"{s}__row_query", f"{s}__keys_t"], [f"{s}__row"], name=f"{s}__row"),
            helper.make_node("Softmax", [f"{s}__row"], [row], name=row, axis=2),
            *_axes_node(g, "Squeeze", row, weights, [1], opset),
        ]
        unsqueezed = [
            c
            for c in consumers.get(weights, [])
            if c.op_type == "Unsqueeze"
            and graph.axes_of(c, constants) in ([1], [-2])
            and not _is_output(g, c.output[0])
        ]
        for c in unsqueezed:
            for node in g.node:
                node.input[:] = [row if i == c.output[0] else i for i in node.input]
        _replace(g, [unsqueeze, product, squeeze, softmax, *unsqueezed], nodes, at=product)
        done += 1
    return _keep_if_same(model, rewritten, done, feeds)


def _row_query(g, query: str, out: str, consumers, producers, constants, shapes, opset: int) -> list:
    """Nodes that give the query u (batch, H) as (batch, 1, H). When u is ``MatMul(Squeeze(h, 0), W)`` with h
    (1, batch, H), as for an LSTM's final state, and read only here: ``Transpose(MatMul(h, W), [1, 0, 2])``,
    a transpose onnxruntime folds into the scores' product (one kernel less than Squeeze + Unsqueeze)."""
    product = producers.get(query)
    squeeze = producers.get(product.input[0]) if product is not None and product.op_type == "MatMul" else None
    if (
        squeeze is not None
        and squeeze.op_type == "Squeeze"
        and graph.axes_of(squeeze, constants) == [0]
        and len(shapes.get(squeeze.input[0]) or ()) == 3
        and product.input[1] in constants
        and len(constants[product.input[1]].dims) == 2
        and len(consumers.get(query, [])) == 1
    ):
        return [
            helper.make_node("MatMul", [squeeze.input[0], product.input[1]], [f"{out}__t"], name=f"{out}__t"),
            helper.make_node("Transpose", [f"{out}__t"], [out], name=out, perm=[1, 0, 2]),
        ]
    return _axes_node(g, "Unsqueeze", query, out, [1], opset)


def _column_scores(softmax, consumers, producers, constants, shapes, opset):
    """(Unsqueeze, MatMul, Squeeze, query u, keys X) when ``softmax`` takes ``Squeeze(MatMul(X, Unsqueeze(u,
    -1)), -1)`` over its last axis with X of rank 3 and u of rank 2, each intermediate used once; else None."""
    scores = softmax.input[0]
    rank = len(shapes.get(scores) or ())
    default_axis = -1 if opset >= AXES_AS_INPUT_OPSET else 1
    if rank != 2 or graph.attr(softmax, "axis", default_axis) % 2 != 1:
        return None
    squeeze = producers.get(scores)
    if squeeze is None or squeeze.op_type != "Squeeze" or len(consumers.get(scores, [])) != 1:
        return None
    if graph.axes_of(squeeze, constants) not in ([2], [-1]):
        return None
    product = producers.get(squeeze.input[0])
    if product is None or product.op_type != "MatMul" or len(consumers.get(squeeze.input[0], [])) != 1:
        return None
    keys, column = product.input
    unsqueeze = producers.get(column)
    if unsqueeze is None or unsqueeze.op_type != "Unsqueeze" or len(consumers.get(column, [])) != 1:
        return None
    query = unsqueeze.input[0]
    if graph.axes_of(unsqueeze, constants) not in ([2], [-1]) or len(shapes.get(query) or ()) != 2:
        return None
    if len(shapes.get(keys) or ()) != 3:
        return None
    return unsqueeze, product, squeeze, query, keys


def _axes_node(g, op: str, source: str, out: str, axes: list[int], opset: int) -> list:
    """A Squeeze or Unsqueeze node in the form the opset wants (its axes initializer added to ``g``)."""
    if opset < AXES_AS_INPUT_OPSET:
        return [helper.make_node(op, [source], [out], name=out, axes=axes)]
    g.initializer.append(numpy_helper.from_array(np.array(axes, np.int64), f"{out}__axes"))
    return [helper.make_node(op, [source, f"{out}__axes"], [out], name=out)]


def _replace(g, removed: list, nodes: list, at) -> None:
    """Put ``nodes`` where ``at`` was (every tensor they read exists there) and remove ``removed``."""
    position = list(g.node).index(at)
    for offset, node in enumerate(nodes):
        g.node.insert(position + offset, node)
    for node in removed:
        g.node.remove(node)


def _keep_if_same(model: onnx.ModelProto, rewritten: onnx.ModelProto, done: int, feeds: list[dict]) -> int:
    """``done`` if ``rewritten`` (nodes written here by hand: checked by onnx first) replaced ``model``, else 0."""
    if not done:
        return 0
    onnx.checker.check_model(rewritten)
    from edgeattn.graphs.onnxfile import take_if_same

    return done if take_if_same(model, rewritten, feeds, TOLERANCE) else 0


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    return copy


def _is_output(g, name: str) -> bool:
    return any(o.name == name for o in g.output)
