"""Standard ONNX ops in place of the node chains tf2onnx writes for them.

Embedding indices: Keras 3's ``Embedding`` maps negative token ids to ``id + rows`` before its ``take`` (nine
nodes: casts, a comparison, a select built from products). ONNX ``Gather`` does exactly that itself. Where the
index of a ``Gather`` from a constant table is computed from one integer graph input alone, that computation
is run on every id in ``[-rows, rows)``; when it gives ``id`` (or ``id + rows`` for negative ids) for each of
them, the ``Gather`` reads the input directly.

``LayerNormalization``: tf2onnx writes Keras' ``LayerNormalization`` as the arithmetic of ``tf.nn.moments``
(13 nodes: two means, a difference, a square, a square root, a reciprocal and the affine part), in several
forms: Keras 2's and Keras 3's, with and without scale and center, means as ``GlobalAveragePool`` or
``ReduceMean``; hand-written layers divide by ``Sqrt(var + eps)`` or raise to ``-0.5``, or take the variance
as ``mean(x^2) - mean^2``. ONNX has had ``LayerNormalization`` since opset 17, and onnxruntime runs it as one
kernel. What a chain computes from its input is written as a polynomial (edgeattn.graphs.algebra), whatever the
order of its operands and nodes: a chain is LayerNormalization when that is ``g * (x - mean) / sqrt(var +
eps) + b`` with one epsilon and g, b per channel. Near forms are not (``(x - mean) / (sqrt(var) + eps)``,
Keras' ``rms_scaling``, RMSNorm), nor a chain whose intermediates other nodes read.

``Gelu`` (opset 20): ``x/2 * (1 + erf(x / sqrt 2))`` and its tanh approximation, recognised the same way.

A rewritten graph must give the same outputs as the original on seeded inputs (within 1e-5: one kernel
rounds differently from thirteen), or it is not used.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgeattn.graphs import algebra, graph
from edgeattn.graphs.algebra import MEAN, MEAN_SQUARE, ROOT, X

LAYER_NORM_OPSET = 17
GELU_OPSET = 20
MEANS = frozenset({"GlobalAveragePool", "ReduceMean"})
TOLERANCE = 1e-5


def fuse_layer_norms(model: onnx.ModelProto, feeds: list[dict]) -> int:
    """Replace each chain that computes a LayerNormalization over the last axis by one node (see the module
    docstring); returns how many were fused (0 when the opset is below 17, nothing matched, or the outputs on
    ``feeds`` moved)."""
    if graph.opset_of(model) < LAYER_NORM_OPSET:
        return 0
    means = [n for n in model.graph.node if n.op_type in MEANS]
    return algebra.fuse(model, feeds, list(dict.fromkeys(n.input[0] for n in means)), _LayerNorm, TOLERANCE)


def fuse_gelus(model: onnx.ModelProto, feeds: list[dict]) -> int:
    """Replace each chain that computes GELU (exact, with ``Erf``, or the tanh approximation) by one ``Gelu``
    node; returns how many were fused (0 below opset 20, when nothing matched, or the outputs moved)."""
    if graph.opset_of(model) < GELU_OPSET:
        return 0
    producers = {o: n for n in model.graph.node for o in n.output}
    sources = []
    for node in model.graph.node:
        if node.op_type in ("Erf", "Tanh"):
            sources += _elementwise_ancestors(node.input[0], producers, depth=4)
    return algebra.fuse(model, feeds, list(dict.fromkeys(sources)), _Gelu, TOLERANCE)


def _elementwise_ancestors(name: str, producers: dict, depth: int) -> list[str]:
    """``name`` and the tensors it is computed from by up to ``depth`` arithmetic nodes."""
    found, todo = [name], [(name, 0)]
    while todo:
        current, level = todo.pop()
        node = producers.get(current)
        if node is None or level >= depth or node.op_type not in algebra.ARITHMETIC:
            continue
        for i in node.input:
            if i and i not in found:
                found.append(i)
                todo.append((i, level + 1))
    return found


class _LayerNorm(algebra.Recogniser):
    """``g * (x - M) * r + b`` with g, b per channel: LayerNormalization over the last axis, epsilon ``eps``
    (the one epsilon a source's chain may use)."""

    XR, MR = ((ROOT, 1), (X, 1)), ((MEAN, 1), (ROOT, 1))

    def __init__(self, shape, constants):
        super().__init__(shape, constants)
        self.eps = None

    def special(self, node, args):
        """A mean over the last axis: terms whose coefficients do not vary along it average to M, Q or
        their mean coefficient."""
        if not _is_last_axis_mean(node, len(self.shape), self.constants) or len(args) < 1:
            return None
        out: dict = {}
        for term, c in args[0].items():
            powers = dict(term)
            degree = powers.pop(X, 0)
            if degree and c.ndim and c.shape[-1] != 1:
                return None
            if degree == 0 and c.ndim and c.shape[-1] != 1:
                c = c.mean(axis=-1, keepdims=True)
            elif degree in (1, 2):
                symbol = MEAN if degree == 1 else MEAN_SQUARE
                powers[symbol] = powers.get(symbol, 0) + 1
            elif degree:
                return None
            out = algebra.plus(out, {tuple(sorted(powers.items())): c})
        return out

    def monomial(self, p):
        """``s * (Q - M^2 + eps)``, the variance plus epsilon, as the one term ``s * r^-2``."""
        if p is None or len(p) <= 1 or set(p) - {((MEAN_SQUARE, 1),), ((MEAN, 2),), ()}:
            return p
        s, m2, eps = (algebra.scalar(p.get(t, np.zeros(1))) for t in (((MEAN_SQUARE, 1),), ((MEAN, 2),), ()))
        if s is None or m2 is None or eps is None or not s or not algebra.close(m2, -s) or eps / s < 0:
            return p
        if self.eps is not None and not algebra.close(eps / s, self.eps):
            return p
        self.eps = eps / s
        return {((ROOT, -2),): np.float64(s)}

    def recognise(self, p):
        if self.XR not in p or set(p) - {self.XR, self.MR, ()} or self.eps is None:
            return None
        gamma, shift = p[self.XR], p.get(self.MR, np.zeros(1))
        if not algebra.close(*np.broadcast_arrays(gamma, -shift)):
            return None
        scale, bias = self._per_channel(gamma), self._per_channel(p.get((), np.zeros(1)))
        return None if scale is None or bias is None else (scale, bias)

    def _per_channel(self, c):
        channels = self.shape[-1]
        if c.ndim > len(self.shape) or any(d != 1 for d in c.shape[:-1]) or c.size not in (1, channels):
            return None
        return np.broadcast_to(c.reshape(-1), (channels,)).astype(np.float32)

    def nodes(self, g, x, y, found):
        names = []
        for kind, value in zip(("scale", "bias"), found):
            names.append(f"{y}__ln_{kind}")
            g.initializer.append(numpy_helper.from_array(np.ascontiguousarray(value), names[-1]))
        return [
            helper.make_node(
                "LayerNormalization", [x, *names], [y], name=f"{y}__layer_norm", axis=-1, epsilon=self.eps
            )
        ]


SQRT_HALF, SQRT_2_OVER_PI, TANH_CUBIC = 0.5**0.5, (2 / np.pi) ** 0.5, 0.044715


class _Gelu(algebra.Recogniser):
    """``x/2 * (1 + erf(x / sqrt 2))`` (Gelu) or ``x/2 * (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`` (Gelu,
    approximate="tanh")."""

    ARGUMENTS: ClassVar[dict] = {
        "erf": {((X, 1),): SQRT_HALF},
        "tanh": {((X, 1),): SQRT_2_OVER_PI, ((X, 3),): SQRT_2_OVER_PI * TANH_CUBIC},
    }

    def special(self, node, args):
        symbol = node.op_type.lower()
        want = self.ARGUMENTS.get(symbol)
        if want is None or not algebra.same_scalars(args[0], want):
            return None
        return {((symbol, 1),): np.float64(1.0)}

    def recognise(self, p):
        for symbol in self.ARGUMENTS:
            if algebra.same_scalars(p, {((X, 1),): 0.5, ((symbol, 1), (X, 1)): 0.5}):
                return "none" if symbol == "erf" else "tanh"
        return None

    def nodes(self, g, x, y, found):
        return [helper.make_node("Gelu", [x], [y], name=f"{y}__gelu", approximate=found)]


def _is_last_axis_mean(node, rank: int, constants: dict) -> bool:
    if node.op_type == "GlobalAveragePool":  # averages every axis after the second: the last one of a rank-3
        return rank == 3
    if node.op_type != "ReduceMean":
        return False
    axes = graph.attr(node, "axes")
    if axes is None and len(node.input) > 1 and node.input[1] in constants:
        axes = constants[node.input[1]].reshape(-1).tolist()
    return (
        graph.attr(node, "keepdims", 1) == 1 and axes is not None and [a % rank for a in axes] == [rank - 1]
    )


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
    from edgeattn.graphs.onnxfile import open_session

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
