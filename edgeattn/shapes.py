"""Constant target shapes for the Reshape nodes whose shapes a graph computes on every call.

tf2onnx writes each reshape of a TensorFlow graph with a dynamic batch axis as ``Shape -> Gather -> Concat ->
(Cast) -> Reshape``: four to six small kernels per reshape, run on every call. An attention block has a dozen of
them (heads split and merged, einsum batch axes), so in a transformer most of the graph's nodes compute shapes.
Where the target shape is the same on every call but for the free axes, it can be a constant: ``0`` where it
copies the input's axis, ``-1`` for the one axis left to infer.

How a target shape depends on the free axes is observed, not guessed: the graph is run on inputs of several
batch sizes (and lengths, where the time axis is free) with every dynamic Reshape's input and output as extra
outputs. The
rewritten graph must then give bit-identical outputs to the original on sizes it was not derived from, or it
is not used.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from edgeattn import defaults, onnxfile, verify

PROBE_BATCHES = (2, 3)
CHECK_BATCH = 5


def freeze_reshapes(model: onnx.ModelProto, vocab: int | None, length: int | None) -> int:
    """Give constant target shapes to the model's dynamic Reshapes where observation allows it; remove the
    shape computations left unused. ``length``: the time length to probe around, for free time axes. Returns
    how many nodes the graph lost (0 when nothing could be done, or the check failed and nothing changed)."""
    initializers = {t.name for t in model.graph.initializer}
    dynamic = [n for n in model.graph.node if n.op_type == "Reshape" and n.input[1] not in initializers]
    if not dynamic:
        return 0
    specs = verify.input_specs(model)
    time_free = any(s.time_free for s in specs)
    base = length or defaults.TIME_STEPS
    sizes = [(b, base) for b in PROBE_BATCHES] + ([(PROBE_BATCHES[0], base + 3)] if time_free else [])
    feeds = [_feed(specs, b, t if time_free else None, vocab) for b, t in sizes]

    runs = onnxfile.tensor_values(model, [name for n in dynamic for name in (n.input[0], n.output[0])], feeds)

    rewritten = onnx.ModelProto()
    rewritten.CopyFrom(model)
    nodes = {n.output[0]: n for n in rewritten.graph.node if n.op_type == "Reshape"}
    changed = 0
    for node in dynamic:
        target = _constant_target(
            [run[node.output[0]].shape for run in runs],
            [run[node.input[0]].shape for run in runs],
            allow_zero=any(a.name == "allowzero" and a.i for a in node.attribute),
        )
        if target is None:
            continue
        name = f"{node.output[0]}__shape"
        rewritten.graph.initializer.append(numpy_helper.from_array(np.array(target, np.int64), name))
        nodes[node.output[0]].input[1] = name
        changed += 1
    if not changed:
        return 0
    check = _feed(specs, CHECK_BATCH, base + 5 if time_free else None, vocab)
    before = len(model.graph.node)
    return before - len(model.graph.node) if onnxfile.take_if_same(model, rewritten, [check], atol=0) else 0


def _feed(specs, batch: int, length: int | None, vocab: int | None) -> dict:
    (case,) = verify.make_cases(specs, batches=(batch,), lengths=[length] if length else None, vocab=vocab)
    return case.feed


def _constant_target(outputs: list[tuple], inputs: list[tuple], allow_zero: bool) -> list[int] | None:
    """One target shape that gives every observed output shape, or None. Each axis: the observed size where it
    never changes; ``0`` where it always equals the input's axis at that index; ``-1`` for at most one axis."""
    if len({len(s) for s in outputs}) != 1 or any(0 in s for s in outputs):
        return None
    target = []
    for axis in range(len(outputs[0])):
        seen = [int(s[axis]) for s in outputs]
        if len(set(seen)) == 1:
            target.append(seen[0])
        elif not allow_zero and all(axis < len(i) and i[axis] == v for i, v in zip(inputs, seen)):
            target.append(0)
        else:
            target.append(-1)
    if target.count(-1) > 1:
        return None
    return target
