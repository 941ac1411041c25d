"""Constant target shapes for the Reshape nodes whose shapes a graph computes on every call, and constants (or
one Shape node) for the rest of its shape arithmetic.

tf2onnx writes each reshape of a TensorFlow graph with a dynamic batch axis as ``Shape -> Gather -> Concat ->
(Cast) -> Reshape``: four to six small kernels per reshape, run on every call. An attention block has a dozen of
them (heads split and merged, einsum batch axes), so in a transformer most of the graph's nodes compute shapes.
Where the target shape is the same on every call but for the free axes, it can be a constant: ``0`` where it
copies the input's axis, ``-1`` for the one axis left to infer (``freeze_reshapes``). Other values computed
from Shape nodes alone (``freeze_shapes``: a Slice's ends, an Expand's shape, a zero recurrent state, a table
of positions) become constants where they are the same on every call, or are read from the one input axis
they follow.

How a shape depends on the free axes is observed, not guessed (``probe_feeds``, ``observe``): the graph is run
on inputs of several batch sizes (and lengths, where a time axis is free; each input its own length where
there are several and the model takes that) with the tensors in question as extra outputs. The rewritten graph
must then give the original's outputs (bit for bit for Reshape targets) on a size it was not derived from, or
it is not used. edgeattn.graphs.layouts and edgeattn.graphs.rows probe the same way; their rewrites are reached from
here."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgeattn.core import defaults
from edgeattn.graphs import cases as verify
from edgeattn.graphs import graph, onnxfile

PROBE_BATCHES = (2, 3)
PROBE_LENGTHS = (0, 3)  # added to the base length, where a time axis is free
CHECK_BATCH, CHECK_LENGTH = 5, 5
TOLERANCE = 1e-5


def freeze_reshapes(model: onnx.ModelProto, vocab: int | None, length: int | None) -> int:
    """Give constant target shapes to the model's dynamic Reshapes where observation allows it; remove the
    shape computations left unused. ``length``: the time length to probe around, for free time axes. Returns
    how many nodes the graph lost (0 when nothing could be done, or the check failed and nothing changed)."""
    initializers = {t.name for t in model.graph.initializer}
    dynamic = [n for n in model.graph.node if n.op_type == "Reshape" and n.input[1] not in initializers]
    if not dynamic:
        return 0
    feeds, checks = probe_feeds(model, vocab, length)
    seen = observe(model, feeds, [name for n in dynamic for name in (n.input[0], n.output[0])])

    rewritten = onnx.ModelProto()
    rewritten.CopyFrom(model)
    nodes = {n.output[0]: n for n in rewritten.graph.node if n.op_type == "Reshape"}
    changed = 0
    for node in dynamic:
        target = constant_target(
            list(seen[node.output[0]]),
            list(seen[node.input[0]]),
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
    before = len(model.graph.node)
    return before - len(model.graph.node) if onnxfile.take_if_same(model, rewritten, checks, atol=0) else 0


def probe_feeds(model: onnx.ModelProto, vocab: int | None, length: int | None) -> tuple[list, list]:
    """Seeded feeds at several batch sizes (and lengths around ``length``, where a time axis is free; batch 1
    of length 1 too, where comparisons of sizes turn), and check feeds at sizes they do not hold: what a
    rewrite is derived from, and what it must then pass. With several free time axes, each input takes its own
    length where the model runs on that (cross-attention's T_q != T_k), so that no axis seems to follow an
    input it does not follow."""
    specs = verify.input_specs(model)
    free = [s.name for s in specs if s.time_free]
    base = length or defaults.TIME_STEPS
    sizes = [(b, base + d) for d in (PROBE_LENGTHS if free else (0,)) for b in PROBE_BATCHES] + [(1, 1)]
    checked = [(CHECK_BATCH, base + CHECK_LENGTH), (1, max(3 * base, base + CHECK_LENGTH))]
    for unequal in (True, False) if len(free) > 1 else (False,):
        steps = {name: 2 * i if unequal else 0 for i, name in enumerate(free)}
        feeds = [_feed(specs, b, t, steps, vocab) for b, t in sizes]
        checks = [_feed(specs, b, t, steps, vocab) for b, t in checked]
        if not unequal or _runs(model, feeds[0]):
            return feeds, checks
    raise AssertionError("unreachable")


def observe(model: onnx.ModelProto, feeds: list[dict], names=None) -> dict[str, tuple]:
    """The shape of each named tensor (default: every node output) on each feed: {name: (shape, ...)}."""
    if names is None:
        names = [o for n in model.graph.node for o in n.output if o]
    runs = onnxfile.tensor_values(model, names, feeds)
    return {name: tuple(tuple(int(d) for d in np.shape(run[name])) for run in runs) for name in runs[0]}


def _feed(specs, batch: int, length: int, steps: dict, vocab: int | None) -> dict:
    feed = {}
    for spec in specs:
        lengths = [length + steps[spec.name]] if spec.name in steps else None
        (case,) = verify.make_cases([spec], batches=(batch,), lengths=lengths, vocab=vocab)
        feed.update(case.feed)
    return feed


def _runs(model: onnx.ModelProto, feed: dict) -> bool:
    import onnxruntime as ort

    quiet = ort.RunOptions()
    quiet.log_severity_level = 4  # a refusal here is an answer, not an error to print
    try:
        onnxfile.open_session(model, ["cpu"], threads=1).run(None, feed, quiet)
    except Exception:  # onnxruntime's kinds: the model ties the lengths of its inputs
        return False
    return True


def constant_target(outputs: list[tuple], inputs: list[tuple], allow_zero: bool) -> list[int] | None:
    """One target shape that gives every observed output shape, or None. Each axis: the observed size where
    it never changes; ``0`` where it always equals the input's axis at that index; ``-1`` for at most one
    axis."""
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


SHAPE_OPS = frozenset({"Shape", "Size"})
SHAPE_SLICE_OPSET = 15  # Shape takes start and end from opset 15 on
SMALL = 64  # the most elements of a shape computation's value rebuilt from axes
MAX_BROADCAST = 1 << 20
ELEMENTWISE = frozenset(
    {"Add", "Sub", "Mul", "Div", "Max", "Min", "Pow", "Where", "And", "Or", "Equal", "Less", "Greater"}
)
RANDOM_OPS = frozenset(
    {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial"}
)


def freeze_shapes(model: onnx.ModelProto, vocab: int | None, length: int | None) -> int:
    """Tensors computed from Shape nodes and constants alone (shape arithmetic), where other nodes read them:
    a constant where the value is the same on every run; nothing where a recurrent node reads one as an
    initial state that is zero on every run (ONNX's default); a constant with one row along the axes that
    vary (positions, say) where only elementwise nodes read it and their other operands span those axes;
    else, where each element of a small integer vector is a constant or an axis of a tensor the graph has
    (a graph input first), that axis read by one Shape node (and a Gather, a Concat with the constants).
    Each kept where the graph loses nodes; all only if the outputs stay the same on a size they were not
    derived from (within 1e-5: onnxruntime fuses an Add of a constant otherwise than of a computed tensor).
    Returns how many nodes the graph lost."""
    g = model.graph
    shaped, anchors = _shape_arithmetic(g)
    readers = graph.consumers(g)
    order = [o for n in g.node for o in n.output if o in shaped]
    if not order:
        return 0
    others = {i for n in order for r in readers.get(n, []) for i in r.input if i and i not in shaped}
    feeds, checks = probe_feeds(model, vocab, length)
    names = sorted(shaped | others | set().union(*anchors.values()))
    values = onnxfile.tensor_values(model, [n for n in names if n not in _initializers(g)], feeds)
    small = {n for n in order if all(np.ndim(run[n]) <= 1 and np.size(run[n]) <= SMALL for run in values)}
    frontier = [  # read outside the shape arithmetic, or a small value (a shape) that makes a large one
        n
        for n in reversed(order)
        if any(
            o not in shaped or (n in small and o not in small) for r in readers.get(n, []) for o in r.output
        )
    ]
    rewritten = onnx.ModelProto()
    rewritten.CopyFrom(model)
    graph.prune_dead(rewritten)
    for name in frontier:
        if not any(name in n.input for n in rewritten.graph.node):
            continue  # no longer read: a later tensor it computed became a constant
        seen = [run[name] for run in values]
        for kind in ("zero state", "constant", "row", "axes"):
            trial = onnx.ModelProto()
            trial.CopyFrom(rewritten)
            if _rebuilt(kind, trial, name, seen, anchors[name], values):
                graph.prune_dead(trial)
                if len(trial.graph.node) < len(rewritten.graph.node):
                    rewritten = trial
                    break
    before = len(model.graph.node)
    if len(rewritten.graph.node) >= before or not onnxfile.take_if_same(model, rewritten, checks, TOLERANCE):
        return 0
    return before - len(model.graph.node)


def _rebuilt(kind: str, model, name: str, seen: list, anchors: list, values: list) -> bool:
    if kind == "constant":
        return _constant_value(model.graph, name, seen)
    if kind == "zero state":
        return _no_zero_state(model.graph, name, seen)
    if kind == "row":
        return _broadcast_value(model.graph, name, seen, values)
    return all(np.ndim(v) <= 1 and np.size(v) <= SMALL for v in seen) and _axes_value(
        model, name, seen, anchors, values
    )


def _initializers(g) -> set:
    return {t.name for t in g.initializer}


def _no_zero_state(g, name: str, seen: list) -> bool:
    """Leave out a recurrent node's initial state that is zero on every run."""
    if any(np.any(v) for v in seen):
        return False
    done = False
    for node in g.node:
        slots = {"LSTM": (5, 6), "GRU": (5,), "RNN": (5,)}.get(node.op_type, ())
        for slot in slots:
            if len(node.input) > slot and node.input[slot] == name:
                node.input[slot], done = "", True
        while done and node.input and not node.input[-1]:
            node.input.pop()
    return done


def _broadcast_value(g, name: str, seen: list, values: list) -> bool:
    """A constant with one row along the axes whose size varies, where the value is that row repeated and
    every reader is elementwise with another operand of the same shape (so the output keeps its shape)."""
    shapes = {np.shape(v) for v in seen}
    if len({len(s) for s in shapes}) != 1 or np.size(seen[0]) > MAX_BROADCAST:
        return False
    varying = [a for a in range(len(seen[0].shape)) if len({s[a] for s in shapes}) > 1]
    row = seen[0][tuple(slice(0, 1) if a in varying else slice(None) for a in range(seen[0].ndim))]
    if not varying or any(not np.array_equal(v, np.broadcast_to(row, v.shape)) for v in seen):
        return False
    for node in g.node:
        if name not in node.input:
            continue
        spans = [i for i in node.input if i != name and i in values[0]]
        if node.op_type not in ELEMENTWISE or not any(
            all(np.shape(run[i]) == np.shape(v) for run, v in zip(values, seen)) for i in spans
        ):
            return False
    constant = f"{name}__row"
    g.initializer.append(numpy_helper.from_array(np.ascontiguousarray(row), constant))
    _read_instead(g, name, constant)
    return True


def _shape_arithmetic(g) -> tuple[set, dict]:
    """The tensors computed from Shape/Size nodes and constants alone, and for each the tensors whose shapes
    it reads (graph inputs first)."""
    constants = {t.name for t in g.initializer}
    inputs = [i.name for i in g.input if i.name not in constants]
    shaped: set = set()
    anchors: dict = {}
    for node in g.node:
        names = [i for i in node.input if i]
        if node.op_type in SHAPE_OPS:
            found = {names[0]}
        elif (
            names
            and node.op_type not in RANDOM_OPS
            and all(i in shaped or i in constants for i in names)
            and any(i in shaped for i in names)
            and not any(
                a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute
            )
        ):
            found = set().union(*(anchors[i] for i in names if i in shaped))
        else:
            continue
        for out in node.output:
            shaped.add(out)
            anchors[out] = found
    return shaped, {name: [*inputs, *sorted(found - set(inputs))] for name, found in anchors.items()}


def _constant_value(g, name: str, seen: list) -> bool:
    """Read ``name`` as a constant where it is the same on every run."""
    first = seen[0]
    if any(v.shape != first.shape or not np.array_equal(v, first) for v in seen):
        return False
    constant = f"{name}__value"
    g.initializer.append(numpy_helper.from_array(np.asarray(first), constant))
    _read_instead(g, name, constant)
    return True


def _axes_value(model, name: str, seen: list, anchors: list, values: list) -> bool:
    """Rebuild an integer vector or scalar from the axes of ``anchors`` it equals (and constants)."""
    g = model.graph
    first = np.asarray(seen[0])
    if first.dtype.kind not in "iu" or first.ndim > 1 or any(np.shape(v) != first.shape for v in seen):
        return False
    runs = np.stack([np.reshape(v, -1) for v in seen])  # (runs, elements)
    pieces = []  # (anchor, [axes]) or (None, [values])
    for e in range(runs.shape[1]):
        if len(set(runs[:, e])) == 1:
            source = (None, int(runs[0, e]))
            if pieces and pieces[-1][0] is not None:  # the next axis of the anchor read before, if it is this
                anchor, axis = pieces[-1][0], pieces[-1][1][-1] + 1
                if all(
                    axis < np.ndim(run[anchor]) and np.shape(run[anchor])[axis] == source[1] for run in values
                ):
                    source = (anchor, axis)
        else:
            source = next(
                (
                    (a, axis)
                    for a in anchors
                    for axis in range(np.ndim(values[0][a]))
                    if all(np.shape(run[a])[axis] == v for run, v in zip(values, runs[:, e]))
                ),
                None,
            )
            if source is None:
                return False
        if pieces and pieces[-1][0] == source[0]:
            pieces[-1][1].append(source[1])
        else:
            pieces.append((source[0], [source[1]]))
    first_reader = next(n for n in g.node if name in n.input)
    position = list(g.node).index(first_reader)
    nodes, parts = [], []
    for k, (anchor, items) in enumerate(pieces):
        part = f"{name}__part{k}"
        if anchor is None:
            g.initializer.append(numpy_helper.from_array(np.array(items, np.int64), part))
        elif (
            first.ndim
            and graph.opset_of(model) >= SHAPE_SLICE_OPSET
            and items == list(range(items[0], items[-1] + 1))
        ):
            nodes.append(
                helper.make_node("Shape", [anchor], [part], name=part, start=items[0], end=items[-1] + 1)
            )
        else:
            nodes.append(helper.make_node("Shape", [anchor], [f"{part}__shape"], name=f"{part}__shape"))
            index = np.array(items if first.ndim else items[0], np.int64)
            g.initializer.append(numpy_helper.from_array(index, f"{part}__axes"))
            nodes.append(helper.make_node("Gather", [f"{part}__shape", f"{part}__axes"], [part], name=part))
        parts.append(part)
    out = parts[0]
    if len(parts) > 1:
        out = f"{name}__axes_value"
        nodes.append(helper.make_node("Concat", parts, [out], name=out, axis=0))
    if first.dtype != np.int64:
        to = helper.np_dtype_to_tensor_dtype(first.dtype)
        nodes.append(helper.make_node("Cast", [out], [f"{out}__cast"], name=f"{out}__cast", to=to))
        out = f"{out}__cast"
    for offset, node in enumerate(nodes):
        g.node.insert(position + offset, node)
    _read_instead(g, name, out)
    return True


def _read_instead(g, old: str, new: str) -> None:
    for node in g.node:
        if node.output and node.output[0] != new:
            node.input[:] = [new if i == old else i for i in node.input]
