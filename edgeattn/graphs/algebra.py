"""What a chain of arithmetic nodes computes from one tensor, as a polynomial: how edgeattn.graphs.fusion recognises
LayerNormalization and GELU in whatever form a converter wrote them.

Each tensor computed from one tensor x and constants (Add, Sub, Mul, Div, Neg, Pow, Reciprocal, Sqrt,
Identity, float Casts, and what a recogniser adds: means over the last axis, Erf, Tanh) is written as a dict
{term: coefficient}: a term is a sorted tuple of (symbol, whole exponent), a coefficient a float64 array
broadcast as the graph's constants are. Symbols: "x" itself and those a recogniser adds (the mean "M" of x
over its last axis, "Q" the mean of x^2, "r" = 1/sqrt(Q - M^2 + eps); "erf" and "tanh" of GELU's arguments).
Whatever the order of the operands and of the nodes, the same function has the same terms; a chain whose
arithmetic has no such form (a root of a sum that is not a variance plus epsilon, a division by a sum) is left
as it is.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from edgeattn.graphs import graph

X, MEAN, MEAN_SQUARE, ROOT = "x", "M", "Q", "r"
ARITHMETIC = frozenset({"Add", "Sub", "Mul", "Div", "Neg", "Pow", "Reciprocal", "Sqrt", "Identity", "Cast"})
MAX_TERMS = 16
RTOL = 1e-6  # constants that float32 rounds (1/sqrt(2), an epsilon that was a float64) still match


def _term_product(a: tuple, b: tuple) -> tuple:
    powers = dict(a)
    for symbol, power in b:
        powers[symbol] = powers.get(symbol, 0) + power
    return tuple(sorted((s, p) for s, p in powers.items() if p))


def plus(a: dict | None, b: dict | None, sign: float = 1.0) -> dict | None:
    if a is None or b is None:
        return None
    out = dict(a)
    for term, c in b.items():
        out[term] = out[term] + sign * c if term in out else sign * c
    return {t: c for t, c in out.items() if np.any(c)}


def times(a: dict | None, b: dict | None) -> dict | None:
    if a is None or b is None or len(a) * len(b) > MAX_TERMS:
        return None
    out: dict = {}
    for t1, c1 in a.items():
        for t2, c2 in b.items():
            out = plus(out, {_term_product(t1, t2): c1 * c2})
    return out


def power(p: dict | None, exponent: float) -> dict | None:
    """p ** exponent: repeated products for a small whole exponent, else p must be one term (with positive
    coefficients) whose exponents stay whole."""
    if p is None or not exponent:
        return None
    if exponent == int(exponent) and 0 < exponent <= 4:
        out: dict | None = {(): np.float64(1.0)}
        for _ in range(int(exponent)):
            out = times(out, p)
        return out
    if len(p) != 1:
        return None
    ((term, c),) = p.items()
    powers = [k * exponent for _, k in term]
    if any(k != int(k) for k in powers) or not np.all(c > 0 if exponent != int(exponent) else c != 0):
        return None
    return {tuple((s, int(k)) for (s, _), k in zip(term, powers)): np.power(c, exponent)}


def elementwise(node, args: list, constants: dict, monomial) -> dict | None:
    """The polynomial of an arithmetic node's output (``monomial`` may rewrite a sum as one term first)."""
    op = node.op_type
    if op == "Identity" or (op == "Cast" and graph.attr(node, "to") == onnx.TensorProto.FLOAT):
        return args[0]
    if op in ("Add", "Sub") and len(args) == 2:
        return plus(args[0], args[1], 1.0 if op == "Add" else -1.0)
    if op == "Mul" and len(args) == 2:
        return times(*args)
    if op == "Neg":
        return times(args[0], {(): np.float64(-1.0)})
    if op == "Div" and len(args) == 2:
        return times(args[0], power(monomial(args[1]), -1))
    if op == "Reciprocal":
        return power(monomial(args[0]), -1)
    if op == "Sqrt":
        return power(monomial(args[0]), 0.5)
    exponent = constants.get(node.input[1]) if op == "Pow" else None
    if exponent is not None and exponent.size == 1:
        e = float(exponent.reshape(-1)[0])
        return power(args[0] if e == int(e) and e > 0 else monomial(args[0]), e)
    return None


def polynomials(g, x: str, constants: dict, recogniser) -> tuple[dict, dict]:
    """The polynomial of each tensor that ``g`` computes from ``x`` and constants alone, and the node that
    computes each (in graph order)."""
    polys = {x: {((X, 1),): np.float64(1.0)}}
    producers = {}
    for node in g.node:
        data = [i for i in node.input if i]
        data, rest = (data, []) if node.op_type in ARITHMETIC - {"Pow"} else (data[:1], data[1:])
        if len(node.output) != 1 or not data or not any(i in polys for i in data):
            continue
        if any(i not in constants for i in rest):
            continue
        if any(i not in polys and (i not in constants or not recogniser.fits(constants[i])) for i in data):
            continue
        args = [polys[i] if i in polys else {(): constants[i].astype(np.float64)} for i in data]
        args = [{t: c for t, c in a.items() if np.any(c)} for a in args]
        if node.op_type in ARITHMETIC:
            p = elementwise(node, args, constants, recogniser.monomial)
        else:
            p = recogniser.special(node, args)
        if p is not None:
            polys[node.output[0]] = p
            producers[node.output[0]] = node
    return polys, producers


def close(a, b) -> bool:
    return bool(np.allclose(a, b, rtol=RTOL, atol=0.0))


def scalar(c) -> float | None:
    return float(np.reshape(c, -1)[0]) if np.size(c) == 1 else None


class Recogniser:
    def __init__(self, shape: tuple, constants: dict):
        self.shape, self.constants = tuple(shape), constants

    def fits(self, c) -> bool:
        """Whether a constant broadcasts against x without widening it (its rank at most x's, each axis 1 or
        x's)."""
        if c.dtype.kind != "f" or c.ndim > len(self.shape):
            return False
        return all(d == 1 or d == s for d, s in zip(reversed(c.shape), reversed(self.shape)))

    def monomial(self, p):
        return p

    def special(self, node, args):
        return None


def same_scalars(p: dict, want: dict) -> bool:
    return set(p) == set(want) and all(
        scalar(c) is not None and close(scalar(c), want[t]) for t, c in p.items()
    )


def fuse(model: onnx.ModelProto, feeds: list[dict], sources: list[str], kind, tolerance: float) -> int:
    """For each source tensor x, the latest tensor computed from x alone that ``kind`` recognises, where the
    nodes computing it are read by nothing else: those nodes become ``kind``'s node(s). Kept only if the
    outputs on ``feeds`` stay within ``tolerance``."""
    from edgeattn.graphs.onnxfile import take_if_same, tensor_values

    rewritten = onnx.ModelProto()
    rewritten.CopyFrom(model)
    g = rewritten.graph
    sources = [s for s in sources if s not in {t.name for t in g.initializer}]
    if not sources:
        return 0
    observed = {name: value.shape for name, value in tensor_values(model, sources, feeds[:1])[0].items()}
    outputs = {o.name for o in g.output}
    fused = 0
    for x in sources:
        if x not in observed or not any(x in n.input for n in g.node):
            continue
        constants = {t.name: numpy_helper.to_array(t) for t in g.initializer}
        recogniser = kind(observed[x], constants)
        polys, producers = polynomials(g, x, constants, recogniser)
        consumers = graph.consumers(g)
        for y in reversed(list(producers)):
            found = recogniser.recognise(polys[y])
            chain = _chain(y, x, producers) if found is not None else {}
            inside = {o for n in chain.values() for o in n.output}
            if not chain or any(
                o != y and (o in outputs or any(c.output[0] not in inside for c in consumers.get(o, [])))
                for o in inside
            ):
                continue
            position = min(list(g.node).index(n) for n in chain.values())
            for n in chain.values():
                g.node.remove(n)
            for offset, node in enumerate(recogniser.nodes(g, x, y, found)):
                g.node.insert(position + offset, node)
            fused += 1
            break
    return fused if fused and take_if_same(model, rewritten, feeds, tolerance) else 0


def _chain(y: str, x: str, producers: dict) -> dict:
    """The nodes (by id) that compute ``y`` from ``x`` (``producers``: of the tensors computed from x)."""
    nodes, todo = {}, [y]
    while todo:
        node = producers.get(todo.pop())
        if node is not None and id(node) not in nodes:
            nodes[id(node)] = node
            todo.extend(i for i in node.input if i and i != x)
    return nodes
