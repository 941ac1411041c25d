"""A step model's graph in fewer kernels.

With one time step a run, most of a step model's kernels are reshapes: tf2onnx writes a Dense on a
(batch, 1, units) tensor as ``Reshape -> (batch, units)``, ``MatMul``, ``Add`` and ``Reshape`` back to
(batch, 1, n), and puts reshapes after reshapes. On a step, each such kernel costs about what the arithmetic
does, so ``fewer_reshapes`` takes them out:

- a ``Reshape`` of a ``Reshape`` reads the first one's input (when its target copies no input axis: no 0);
- a product with a constant matrix between a ``Reshape`` that flattens (batch, 1, ..., u) to (batch, u) and a
  ``Reshape`` that restores (batch, 1, ..., n) (a constant bias ``Add`` may sit between) runs on the
  unflattened tensor (``MatMul`` broadcasts over the leading axes) and both reshapes go.

Shapes are observed on seeded feeds (``shapes.observe``); the rewritten graph is kept only if it gives the
same outputs on feeds of other sizes (``onnxfile.take_if_same``).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from edgeattn.graphs import facts, layouts, onnxfile, shapes

TOLERANCE = 1e-5


def fewer_reshapes(model: onnx.ModelProto, vocab: int | None = None) -> int:
    """Take out the reshapes a step needs not (see the module docstring); returns how many went (0: none, or
    the check failed and nothing changed)."""
    feeds, checks = shapes.probe_feeds(model, vocab, 1)
    seen = shapes.observe(model, feeds)
    trial = layouts.copied(model)
    g = trial.graph
    constants = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    producers = {o: n for n in g.node for o in n.output}
    readers = facts.consumers(g)
    outputs = {o.name for o in g.output}
    done = 0
    for node in g.node:  # a Reshape of a Reshape
        first = producers.get(node.input[0]) if node.op_type == "Reshape" else None
        target = constants.get(node.input[1]) if first is not None and len(node.input) > 1 else None
        if first is not None and first.op_type == "Reshape" and target is not None and 0 not in target:
            node.input[0] = first.input[0]
            done += 1
    producers = {o: n for n in g.node for o in n.output}
    for product in list(g.node):
        chain = _flattened_product(product, producers, readers, constants, seen, outputs)
        if chain is None:
            continue
        source, tail, restore = chain
        product.input[0] = source
        tail.output[0] = restore.output[0]
        g.node.remove(restore)
        done += 2
    if not done:
        return 0
    return done if onnxfile.take_if_same(model, trial, checks + feeds[:1], TOLERANCE) else 0


def _flattened_product(product, producers, readers, constants, seen, outputs):
    """For a MatMul with a constant matrix between a flattening Reshape and a restoring one: (the unflattened
    tensor, the chain's last node, the restoring Reshape); else None."""
    if product.op_type != "MatMul" or constants.get(product.input[1], np.empty(0)).ndim != 2:
        return None
    flatten = producers.get(product.input[0])
    if flatten is None or flatten.op_type != "Reshape":
        return None
    source = flatten.input[0]
    tail = product
    after = readers.get(tail.output[0], [])
    if len(after) == 1 and after[0].op_type == "Add" and tail.output[0] not in outputs:
        bias = next((constants.get(i) for i in after[0].input if i != tail.output[0]), None)
        if bias is not None and bias.ndim <= 1:
            tail = after[0]
            after = readers.get(tail.output[0], [])
    if len(after) != 1 or after[0].op_type != "Reshape" or tail.output[0] in outputs:
        return None
    restore = after[0]
    before, flat, back = seen.get(source), seen.get(flatten.output[0]), seen.get(restore.output[0])
    if not before or not flat or not back:
        return None
    for s, f, b in zip(before, flat, back):
        if len(s) < 3 or any(d != 1 for d in s[1:-1]) or f != (s[0], s[-1]) or b[:-1] != s[:-1]:
            return None
    return source, tail, restore
