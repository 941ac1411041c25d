"""Seeded inputs and their comparison: the cases every parity check runs, and the report it returns.

Both sides of a check get the same seeded inputs (several batch sizes; several lengths where the time axis is
free, and unequal lengths per input where the model takes them; token ids over the whole vocabulary, 0 and
padding included; booleans of both values). ``compare`` runs an onnxruntime session and a reference function
on every case and returns a ``ParityReport``: per output (and per layer) max abs / max rel / mean abs error,
the tensor's scale (its largest |reference| value), the tolerance it got, the worst case and sample, and a pass
flag; the report is truthy when everything passed. Nothing here prints, and nothing here knows Keras: the
reference is any function of a feed (Keras on the convert side, the stored outputs for ``verify --golden``,
another ONNX graph for the rewrites).

The tolerance of a compared tensor is ``atol + rtol * scale``: float32 rounding grows with a tensor's
magnitude (a deep residual stream of ~10^3 rounds at ~10^-4), so a fixed ``atol`` fails correct deep models;
``rtol`` scales with the whole tensor, not element by element, so values near zero inside a large tensor do
not get a tolerance of zero.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

import numpy as np
import onnx

from edgeattn.core import defaults
from edgeattn.core.errors import InputError, first_line
from edgeattn.graphs import graph

DEFAULT_BATCHES = defaults.VERIFY_BATCHES
DEFAULT_ATOL = defaults.ATOL
DEFAULT_RTOL = defaults.RTOL


@dataclass
class OutputParity:
    name: str
    max_abs: float
    max_rel: float
    mean_abs: float
    worst_case: str
    worst_sample: int
    atol: float
    rtol: float
    passed: bool
    scale: float = 0.0  # the largest |reference| value over every case
    tol: float | None = None  # the tolerance this tensor got: atol + rtol * scale

    def __post_init__(self):
        if self.tol is None:
            self.tol = tolerance(self.atol, self.rtol, self.scale)


def tolerance(atol: float, rtol: float, scale: float) -> float:
    """What a tensor whose largest |reference| value is ``scale`` may differ by anywhere."""
    return atol + rtol * scale


def _bound(o: OutputParity) -> str:
    return f"tolerance {o.tol:.3g} (atol {o.atol:g} + rtol {o.rtol:g} * scale {o.scale:.3g})"


@dataclass
class ParityReport:
    outputs: list[OutputParity]
    cases: list[str]
    inputs: str
    provider: str
    structure_problems: list[str] = field(default_factory=list)
    # each Keras layer's output, in the model's order
    layers: list[OutputParity] = field(default_factory=list)
    diverges: str = ""  # a stream: where it first leaves the tolerance (step, layer or output)

    @property
    def passed(self) -> bool:
        return not self.structure_problems and all(o.passed for o in [*self.outputs, *self.layers])

    @property
    def first_divergent_layer(self) -> OutputParity | None:
        """The first layer (in the model's order) whose output is out of tolerance: where it starts."""
        return next((layer for layer in self.layers if not layer.passed), None)

    def __bool__(self) -> bool:
        return self.passed

    @property
    def max_abs(self) -> float:
        return max((o.max_abs for o in self.outputs), default=0.0)

    def failures(self) -> list[str]:
        """One line per thing that failed; the first divergent layer first, since that is where it starts."""
        lines = [self.diverges, *self.structure_problems] if self.diverges else list(self.structure_problems)
        first = self.first_divergent_layer
        if first is not None and not self.diverges:
            lines.append(
                f"layer {first.name!r} is the first to diverge: max abs error {first.max_abs:.3g} > "
                f"{_bound(first)} (worst: {first.worst_case}, sample {first.worst_sample})"
            )
        for o in self.outputs:
            if not o.passed:
                lines.append(
                    f"output {o.name!r}: max abs error {o.max_abs:.3g} > {_bound(o)}"
                    f" (worst: {o.worst_case}, sample {o.worst_sample})"
                )
        return lines

    def to_dict(self) -> dict:
        return {"passed": self.passed, **asdict(self)}


# -- inputs -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InputSpec:
    name: str
    shape: tuple  # ints for fixed axes, str for free ones
    dtype: str

    @property
    def time_free(self) -> bool:
        return len(self.shape) >= 2 and not isinstance(self.shape[1], int)


def input_specs(model: onnx.ModelProto) -> list[InputSpec]:
    return [InputSpec(name, shape, dtype) for name, shape, dtype in graph.summarize(model).inputs]


def free_input_shapes(model: onnx.ModelProto) -> list[tuple[str, str, tuple]]:
    """The ONNX model's inputs as (name, dtype, shape), its free axes None (and the batch axis always): what a
    Keras file that records no inputs (a subclassed model) is built on when it is compared with its export."""
    return [
        (s.name, s.dtype, tuple(d if isinstance(d, int) and i else None for i, d in enumerate(s.shape)))
        for s in input_specs(model)
    ]


@dataclass(frozen=True)
class Case:
    description: str
    feed: dict[str, np.ndarray]
    batch: int = 0
    length: int | None = None
    unequal: bool = False  # the free time axes of the inputs have different lengths


def describe(cases: list[Case]) -> str:
    """One line for a set of cases: the batch sizes and, where the time axis is free, the lengths."""
    batches = sorted({c.batch for c in cases})
    lengths = sorted({c.length for c in cases if c.length is not None})
    text = f"{len(cases)} case(s): batch {', '.join(map(str, batches))}"
    text += f" x time {', '.join(map(str, lengths))}" if lengths else ""
    unequal = sum(c.unequal for c in cases)
    return text + (f" + {unequal} with unequal lengths per input" if unequal else "")


def make_cases(
    specs: list[InputSpec],
    batches=DEFAULT_BATCHES,
    lengths=None,
    seed: int = 0,
    vocab: int | None = None,
    trained_length: int | None = None,
    wide: bool = True,
    probe=None,
) -> list[Case]:
    """Seeded inputs for every batch size, and every length where an input's time axis is free.

    Float samples cycle through U[0, 1), U[-1, 1) and (with ``wide``) N(0, 3); integer inputs are ids over
    the whole of [0, vocab) (every third sample padded with a tail of 0s, for ``mask_zero``), or 0s and 1s
    where no vocabulary is known; booleans are both values.

    With ``probe`` (the reference, ``probe(feed) -> outputs``) and two or more inputs with a free time axis,
    cases where each such input has its own length come first (cross-attention's ``T_q != T_k``), kept only
    when the reference accepts unequal lengths (a model may tie them, e.g. by adding its inputs).
    """
    rng = np.random.default_rng(seed)
    free = [s.name for s in specs if s.time_free]
    if lengths is None:
        base = trained_length or defaults.TIME_STEPS
        lengths = sorted({1, 5, base, 3 * base}) if free else [None]
        unequal = _unequal_cases(
            specs, free, batches, [n for n in lengths if n and n > 1], rng, vocab, wide, probe
        )
    else:
        unequal = []
    cases = []
    for length in lengths:
        for batch in batches:
            feed = {s.name: _random_input(s, batch, length, rng, vocab, wide) for s in specs}
            desc = f"batch {batch}" + (f", time {length}" if length is not None else "")
            cases.append(Case(desc, feed, batch, length))
    return unequal + cases


def _unequal_cases(specs, free, batches, lengths, rng, vocab, wide, probe) -> list[Case]:
    """Cases whose free-time inputs each take another length (rotating through ``lengths``), if ``probe``
    (the reference) runs on the first; none where it refuses it: the model ties the lengths."""
    if probe is None or len(free) < 2 or len(lengths) < 2:
        return []
    batch = sorted(batches)[len(batches) // 2]  # a middle batch size: several samples, still cheap
    cases = []
    for k in range(len(lengths)):
        per = {name: lengths[(k + j) % len(lengths)] for j, name in enumerate(free)}
        feed = {s.name: _random_input(s, batch, per.get(s.name), rng, vocab, wide) for s in specs}
        desc = f"batch {batch}, time " + " ".join(f"{name}={n}" for name, n in per.items())
        cases.append(Case(desc, feed, batch, None, unequal=True))
    try:
        probe(cases[0].feed)
    except Exception:  # Keras' and TensorFlow's many kinds: the reference ties the inputs' lengths
        return []
    return cases


def _random_input(
    spec: InputSpec, batch: int, length: int | None, rng, vocab: int | None, wide: bool = True
) -> np.ndarray:
    shape = []
    for axis, dim in enumerate(spec.shape):
        if axis == 0:
            shape.append(batch)
        elif isinstance(dim, int):
            shape.append(dim)
        elif axis == 1 and length is not None:
            shape.append(length)
        else:
            raise InputError(
                f"input {spec.name!r} has a free axis {axis} ({dim!r}) that edgeattn cannot size"
            )
    dtype = np.dtype(spec.dtype)
    if dtype.kind == "b":  # both values, about half each; the first entry of every row True (a mask that
        x = rng.random(shape) < 0.5  # hides a whole row is a degenerate input, not a parity question)
        if x.ndim >= 2:
            x[..., 0] = True
        return x
    if dtype.kind in "iu":
        high = max(2, vocab or 2)
        ids = rng.integers(0, high, size=shape)
        if ids.size:
            ids.flat[int(rng.integers(ids.size))] = high - 1  # the last id of the vocabulary
        if ids.ndim >= 2 and ids.shape[1] >= 2:  # every third sample padded: a tail of 0s (mask_zero)
            for sample in range(0, ids.shape[0], 3):
                ids[sample, int(rng.integers(1, ids.shape[1])) :] = 0
        if ids.ndim >= 2:
            ids[:, 0] = np.maximum(ids[:, 0], 1)  # never a sample of padding only
        return ids.astype(dtype)
    # Float samples cycle through three ranges: in-distribution for most models (U[0,1)), signed (U[-1,1)) and
    # wide (N(0, 3)), which drives units into their non-linear ranges: a moved weight cannot hide there.
    x = rng.random(shape, dtype=np.float64)
    if not wide:
        x[1::2] = 2.0 * x[1::2] - 1.0
        return x.astype(dtype)
    x[1::3] = 2.0 * x[1::3] - 1.0
    x[2::3] = 3.0 * rng.standard_normal(x[2::3].shape)
    return x.astype(dtype)


def cases_from_file(path: str | os.PathLike, specs: list[InputSpec]) -> list[Case]:
    """Inputs from an ``.npy`` (one input) or ``.npz`` (arrays named after the inputs, or one array)."""
    path = os.fspath(path)
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise InputError(f"{path}: not a readable .npy/.npz file ({exc})") from None
    if isinstance(loaded, np.ndarray):
        arrays = {specs[0].name: loaded} if len(specs) == 1 else {}
    else:
        with loaded:
            arrays = {k: loaded[k] for k in loaded.files}
        if len(specs) == 1 and len(arrays) == 1:
            arrays = {specs[0].name: next(iter(arrays.values()))}
    missing = [s.name for s in specs if s.name not in arrays]
    if missing:
        raise InputError(f"{path} lacks arrays for input(s) {', '.join(missing)}")
    feed = {s.name: arrays[s.name].astype(s.dtype) for s in specs}
    batch = next(iter(feed.values())).shape[0]
    return [Case(f"{os.path.basename(path)} (batch {batch})", feed, batch)]


# -- comparison -------------------------------------------------------------------------------------------


def compare(
    reference_fn,
    session,
    cases: list[Case],
    atol: float = DEFAULT_ATOL,
    rtol: float = DEFAULT_RTOL,
) -> ParityReport:
    """Run ``session`` (onnxruntime) and ``reference_fn(feed) -> [arrays]`` on every case and compare.

    Outputs are matched by position: the ONNX model's i-th output against the reference's i-th. Each passes
    when its max abs error over every case is within ``atol + rtol * scale``, ``scale`` being its largest
    |reference| value over every case (and where the reference is finite the ONNX output is, and vice versa).
    """
    names = [o.name for o in session.get_outputs()]
    stats: dict[str, dict] = {
        n: {"max_abs": 0.0, "max_rel": 0.0, "sum": 0.0, "count": 0, "worst": ("", 0), "passed": True,
            "scale": 0.0, "pinned": False}
        for n in names
    }  # fmt: skip
    used = []
    for case in cases:
        if case.unequal:  # the reference first: a combination of lengths it refuses is no parity question
            try:
                want = reference_fn(case.feed)
            except Exception:  # Keras' and TensorFlow's many kinds
                continue
            try:
                got = session.run(names, case.feed)
            except Exception as exc:  # onnxruntime's kinds: the reference took these lengths, ONNX did not
                for s in stats.values():
                    s["passed"] = False
                    s["max_abs"] = s["max_rel"] = float("inf")
                    s["worst"] = (f"{case.description}: onnxruntime failed ({first_line(exc)[:120]})", 0)
                    s["pinned"] = True  # what failed stays the worst case
                used.append(case)
                continue
        else:
            got = session.run(names, case.feed)
            want = reference_fn(case.feed)
        used.append(case)
        if len(want) != len(got):
            raise InputError(f"the ONNX model has {len(got)} outputs, the reference model {len(want)}")
        for name, g, w in zip(names, got, want):
            s = stats[name]
            if g.shape != w.shape:
                s["passed"] = False
                s["max_abs"] = s["max_rel"] = float("inf")
                s["worst"] = (f"{case.description}: shape {g.shape} vs {w.shape}", 0)
                s["pinned"] = True
                continue
            diff = np.abs(g.astype(np.float64) - w.astype(np.float64))
            ref = np.abs(w.astype(np.float64))
            if not np.all(np.isfinite(g) == np.isfinite(w)) or np.isnan(diff).any():
                s["passed"] = False
            finite = ref[np.isfinite(ref)]
            if finite.size:
                s["scale"] = max(s["scale"], float(finite.max()))
            if diff.size:
                flat = int(np.nanargmax(diff)) if np.isfinite(diff).any() else 0
                worst = float(diff.flat[flat])
                if not s["pinned"] and (worst > s["max_abs"] or s["count"] == 0):
                    sample = int(np.unravel_index(flat, diff.shape)[0]) if diff.ndim else 0
                    s["worst"] = (case.description, sample)
                s["max_abs"] = max(s["max_abs"], worst)
                s["max_rel"] = max(s["max_rel"], float(np.nanmax(diff / np.maximum(ref, 1e-12))))
                s["sum"] += float(np.nansum(diff))
                s["count"] += diff.size
    outputs = [
        OutputParity(
            name=n,
            max_abs=s["max_abs"],
            max_rel=s["max_rel"],
            mean_abs=s["sum"] / max(1, s["count"]),
            worst_case=s["worst"][0],
            worst_sample=s["worst"][1],
            atol=atol,
            rtol=rtol,
            passed=s["passed"] and s["max_abs"] <= tolerance(atol, rtol, s["scale"]),
            scale=s["scale"],
        )
        for n, s in stats.items()
    ]
    return ParityReport(
        outputs=outputs,
        cases=[c.description for c in used],
        inputs=describe(used),
        provider=session.get_providers()[0],
    )
