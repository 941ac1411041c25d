"""Fewer layout kernels: one Reshape for a chain of layout nodes, one Transpose for two, none for unit axes.

Layout chains: consecutive Reshape, Squeeze, Unsqueeze, Flatten and Identity nodes (each intermediate read
only by the next) compute one Reshape; ``merge_layout_chains`` writes that one (none where it gives its
input's shape), and one Transpose for two in a row. ``squeeze_transposes``: tf2onnx's einsums insert axes of
size 1 before a Transpose and take them out after it; the Transpose of the other axes alone does the same.
Also the graph edits edgeattn.graphs.rows shares (nodes added after others, their shapes recorded; a node bypassed).

What each target is, is observed (edgeattn.graphs.shapes): the graph is run on inputs of several batch sizes and
lengths. A rewrite is kept only where it leaves fewer nodes and the rewritten graph gives the original's
outputs, bit for bit, on a size it was not derived from."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgeattn.graphs import graph, onnxfile, shapes

LAYOUT_OPS = frozenset({"Reshape", "Squeeze", "Unsqueeze", "Flatten", "Identity"})


def merge_layout_chains(model: onnx.ModelProto, vocab: int | None, length: int | None) -> int:
    """One Reshape (constant target) for each chain of layout nodes, none where the chain gives its input's
    shape; one Transpose for two in a row. Returns how many nodes the graph lost (0 when none, or the check
    failed)."""
    if not _layout_chains(model) and not _transpose_pairs(model):
        return 0
    feeds, checks = shapes.probe_feeds(model, vocab, length)
    rewritten = copied(model)
    _merge(rewritten, shapes.observe(model, feeds))
    before = len(model.graph.node)
    return before - len(model.graph.node) if onnxfile.take_if_same(model, rewritten, checks, atol=0) else 0


def squeeze_transposes(model: onnx.ModelProto, vocab: int | None, length: int | None) -> int:
    """A Transpose of a tensor with axes of size 1 (on every run) as the Transpose of the other axes between
    two Reshapes, which then merge with the layout nodes around them (``merge_layout_chains``): tf2onnx's
    einsums insert such axes before a Transpose and take them out after it. Kept where the graph loses
    nodes; returns how many."""
    transposes = [n for n in model.graph.node if n.op_type == "Transpose" and graph.attr(n, "perm")]
    if not transposes:
        return 0
    feeds, checks = shapes.probe_feeds(model, vocab, length)
    seen = shapes.observe(model, feeds)
    rewritten = copied(model)
    for name in [n.output[0] for n in transposes]:
        trial = copied(rewritten)
        node = next((n for n in trial.graph.node if n.output[0] == name and n.op_type == "Transpose"), None)
        if node is not None and _squeeze(trial.graph, node, seen):
            _merge(trial, seen)
            rewritten = trial if pruned_size(trial) < len(rewritten.graph.node) else rewritten
    before = len(model.graph.node)
    if len(rewritten.graph.node) >= before or not onnxfile.take_if_same(model, rewritten, checks, atol=0):
        return 0
    return before - len(model.graph.node)


def _squeeze(g, node, seen: dict) -> bool:
    """Write one Transpose as Reshape (the axes of size 1 out), Transpose, Reshape (back in); whether done."""
    source, out = node.input[0], node.output[0]
    keep = [a for a in range(len(seen[source][0])) if any(s[a] != 1 for s in seen[source])]
    if not keep or len(keep) == len(seen[source][0]):
        return False
    perm = [p for p in graph.attr(node, "perm") if p in keep]
    inner = tuple(tuple(s[a] for a in keep) for s in seen[source])
    moved = tuple(tuple(s[p] for p in perm) for s in seen[source])
    first, last = fixed_target(inner, seen[source]), fixed_target(seen[out], moved)
    if first is None or last is None:
        return False
    squeezed = add_node(g, node, "Reshape", [source, add_constant(g, node, first)], inner, seen, suffix="in")
    after = next(n for n in g.node if n.output[0] == squeezed)
    order = [keep.index(p) for p in perm]
    permuted = add_node(g, after, "Transpose", [squeezed], moved, seen, [_perm(order)], suffix="perm")
    after = next(n for n in g.node if n.output[0] == permuted)
    g.node.insert(list(g.node).index(after) + 1, _reshape(g, permuted, out, last))
    g.node.remove(node)
    return True


def _merge(model: onnx.ModelProto, seen: dict) -> None:
    """``merge_layout_chains`` in place, ``seen`` holding every tensor's observed shapes."""
    g = model.graph
    for chain in _layout_chains(model):
        source, out = chain[0].input[0], chain[-1].output[0]
        if seen[source] == seen[out] and bypass(g, chain, out, source):
            continue
        constant = {t.name for t in g.initializer}
        if len(chain) == 1 and (chain[0].op_type != "Reshape" or chain[0].input[1] in constant):
            continue  # one node already, with a constant target
        target = fixed_target(seen[out], seen[source])
        if target is not None:
            g.node.insert(list(g.node).index(chain[-1]), _reshape(g, source, out, target))
            g.node.remove(chain[-1])
    graph.prune_dead(model)
    for first, second in _transpose_pairs(model):
        p1, p2 = graph.attr(first, "perm"), graph.attr(second, "perm")
        perm = [p1[p] for p in p2]
        if perm == sorted(perm) and bypass(g, [first, second], second.output[0], first.input[0]):
            continue
        second.input[0] = first.input[0]
        del second.attribute[:]
        second.attribute.append(_perm(perm))
    graph.prune_dead(model)


def _transpose_pairs(model: onnx.ModelProto) -> list[tuple]:
    """(first, second) for each Transpose read only by a Transpose (neither reading the other's pair)."""
    consumers = graph.consumers(model.graph)
    outputs = {o.name for o in model.graph.output}
    pairs, used = [], set()
    for node in model.graph.node:
        users = consumers.get(node.output[0], [])
        if node.op_type != "Transpose" or len(users) != 1 or users[0].op_type != "Transpose":
            continue
        if node.output[0] in outputs or node.output[0] in used or not graph.attr(node, "perm"):
            continue
        if graph.attr(users[0], "perm"):
            pairs.append((node, users[0]))
            used.update((node.output[0], users[0].output[0]))
    return pairs


def _perm(perm: list[int]):
    return helper.make_attribute("perm", [int(p) for p in perm])


def _reshape(g, source: str, out: str, target: list[int]):
    name = _unique(g, f"{out}__layout")
    g.initializer.append(numpy_helper.from_array(np.array(target, np.int64), name))
    return helper.make_node("Reshape", [source, name], [out], name=f"{out}__reshape")


def fixed_target(outputs, inputs) -> list[int] | None:
    return shapes.constant_target(list(outputs), list(inputs), allow_zero=False)


def _layout_chains(model: onnx.ModelProto) -> list[list]:
    """Maximal runs of layout nodes, each intermediate read only by the next and not a graph output; runs of
    two or more, or one Reshape (which may give its input's shape)."""
    g = model.graph
    consumers = graph.consumers(g)
    outputs = {o.name for o in g.output}
    producers = {o: n for n in g.node for o in n.output}

    def next_of(node):
        users = consumers.get(node.output[0], [])
        if len(users) == 1 and users[0].op_type in LAYOUT_OPS and node.output[0] not in outputs:
            return users[0]
        return None

    chains = []
    for node in g.node:
        if node.op_type not in LAYOUT_OPS or len(node.output) != 1:
            continue
        before = producers.get(node.input[0])
        if before is not None and before.op_type in LAYOUT_OPS and next_of(before) is node:
            continue  # not the start of its run
        chain = [node]
        while next_of(chain[-1]) is not None:
            chain.append(next_of(chain[-1]))
        if len(chain) > 1 or node.op_type == "Reshape":
            chains.append(chain)
    return chains


def add_node(g, after, op, inputs, shape, seen, attributes=(), suffix="rows") -> str:
    """A node inserted after ``after`` (its output named from after's), its output's shapes recorded."""
    out = _unique(g, f"{after.output[0]}__{suffix}")
    node = helper.make_node(op, list(inputs), [out], name=out)
    node.attribute.extend(attributes)
    g.node.insert(list(g.node).index(after) + 1, node)
    seen[out] = shape
    return out


def add_constant(g, node, value, kind: str = "shape") -> str:
    name = _unique(g, f"{node.output[0]}__{kind}")
    value = np.asarray(value)
    g.initializer.append(
        numpy_helper.from_array(value.astype(np.int64) if kind in ("shape", "axes") else value, name)
    )
    return name


def _unique(g, name: str) -> str:
    """``name``, or ``name`` and a number, so that no tensor of ``g`` has it yet."""
    taken = {t.name for t in g.initializer} | {o for n in g.node for o in n.output}
    taken |= {i.name for i in g.input}
    candidate, number = name, 1
    while candidate in taken:
        candidate, number = f"{name}_{number}", number + 1
    return candidate


def bypass(g, nodes: list, out: str, source: str) -> bool:
    """Let ``nodes``, which compute ``out`` from ``source`` (the same values), go: their readers read source;
    where out is a graph output, source's producer writes it instead. Whether it could be done."""
    outputs = {o.name for o in g.output}
    if out not in outputs:
        for node in g.node:
            node.input[:] = [source if i == out else i for i in node.input]
        return True
    produced = {o for n in g.node for o in n.output if n not in nodes}
    if source in outputs or source not in produced:
        return False  # a graph input or output itself: a node must copy it
    for node in nodes:
        g.node.remove(node)
    for node in g.node:
        node.input[:] = [out if i == source else i for i in node.input]
        node.output[:] = [out if o == source else o for o in node.output]
    return True


def pruned_size(model: onnx.ModelProto) -> int:
    """How many nodes the model has once its dead ones are pruned."""
    graph.prune_dead(model)
    return len(model.graph.node)


def copied(model: onnx.ModelProto) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    return copy
