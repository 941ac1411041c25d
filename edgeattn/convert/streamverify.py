"""Parity of a stream: a step (or stateful) ONNX model stepped through whole sequences against the Keras model
run on the whole sequence, output by output and layer by layer, at every step.

Each seeded sequence is fed to onnxruntime one step (a stateful model: one chunk) at a time from the initial
state, each run's state outputs fed to the next run (a state output the graph lacks is not carried: its input
stays the initial state, which is how a cut state shows). Keras runs the full-sequence model (stateless, on a
free time axis) once per sequence; an output without a time axis (many-to-one) is taken on each prefix, one
Keras call per step. The rows are the ``ParityReport``'s (max abs/rel error, worst case and sample, tolerance
``atol + rtol * scale``), and ``report.diverges`` says at which step and in which layer or output the stream
first leaves the tolerance. Nothing here prints.
"""

from __future__ import annotations

import json
import warnings

import numpy as np

from edgeattn.convert.kerasmodel import keras_outputs, with_layer_outputs
from edgeattn.core.errors import InputError
from edgeattn.graphs.cases import Case, InputSpec, compare, make_cases
from edgeattn.graphs.streamstates import STREAM_KEY

STEP_LENGTHS = (1, 10, 200)  # verify's sequence lengths for a step model (each fed one step at a time)
EXPORT_LENGTHS = (1, 9, 40)  # the export's own check: shorter
CHUNK = 8  # a stateful model on a free time axis is fed in chunks of this many steps


def stream_meta(proto_or_meta) -> dict | None:
    """The ``edgeattn.stream`` entry of a model (its metadata dict or ``onnx.ModelProto``), or None."""
    meta = proto_or_meta
    if not isinstance(meta, dict):
        meta = {p.key: p.value for p in proto_or_meta.metadata_props}
    if STREAM_KEY not in meta:
        return None
    try:
        entry = json.loads(meta[STREAM_KEY])
        assert {"kind", "inputs", "outputs", "states"} <= set(entry)
        assert all({"input", "output", "shape"} <= set(s) for s in entry["states"])
    except (ValueError, TypeError, AssertionError):
        raise InputError(f"the model's {STREAM_KEY} entry is not one edgeattn wrote (not its JSON)") from None
    return entry


def chunk_of(session, meta: dict) -> int:
    """Steps per run: 1 for a step model; a stateful model's fixed time length, or ``CHUNK``."""
    if meta["kind"] == "step":
        return 1
    shape = next(i for i in session.get_inputs() if i.name == meta["inputs"][0]).shape
    return shape[1] if isinstance(shape[1], int) else CHUNK


def fixed_batch(stateful) -> tuple | None:
    """The batch size a Keras model with stateful layers is built for, as a batch list (None: not stateful)."""
    size = stateful.inputs[0].shape[0] if stateful is not None else None
    return (size,) if isinstance(size, int) else None


def sequence_cases(
    session, meta: dict, lengths, batches, seed: int = 0, vocab: int | None = None
) -> list[Case]:
    """Seeded whole sequences (batch, time, ...) for the data inputs; lengths rounded up to whole chunks and
    capped at the model's ``max_steps``."""
    chunk = chunk_of(session, meta)
    cap = meta.get("max_steps")
    lengths = sorted({-(-min(n, cap or n) // chunk) * chunk for n in lengths})
    dtypes = {"tensor(float)": "float32", "tensor(double)": "float64", "tensor(int64)": "int64",
              "tensor(int32)": "int32", "tensor(bool)": "bool"}  # fmt: skip
    specs = [InputSpec(i.name, ("batch", "time", *i.shape[2:]), dtypes.get(i.type, "float32"))
             for i in session.get_inputs() if i.name in meta["inputs"]]  # fmt: skip
    return make_cases(specs, batches=batches, lengths=lengths, seed=seed, vocab=vocab)


def check(
    session, reference, meta: dict, cases: list[Case], layer_map=(), atol=1e-4, rtol=0.0, stateful=None
):
    """Step ``session`` through each case and compare with ``reference`` (the full-sequence Keras model); with
    ``layer_map`` ((Keras layer, ONNX tensor) pairs that the session outputs), every layer too. Returns a
    ``ParityReport`` whose ``layers`` are those layers and ``diverges`` the first step out of tolerance.
    ``stateful``: the Keras model with ``stateful=True`` layers, whose own run chunk by chunk is then the
    reference (what a stateful model means: a layer may read a whole chunk); the cases take its batch size."""
    names = [*meta["outputs"], *(tensor for _, tensor in layer_map)]
    probed = [n for n, _ in layer_map]
    keras_model = with_layer_outputs(reference, probed) if layer_map else reference
    sequence = [t.shape[1] is None for t in keras_model.outputs]  # else: no time axis (many-to-one)
    chunk = chunk_of(session, meta)
    if stateful is not None:
        chunked = with_layer_outputs(stateful, probed) if layer_map else stateful
        want = lambda feed: _chunked(stateful, chunked, feed, chunk, sequence)  # noqa: E731
    else:
        want = lambda feed: _reference(keras_model, feed, chunk, sequence)  # noqa: E731
    results = {}
    for case in cases:
        results[id(case.feed)] = (_stepped(session, meta, case.feed, names, chunk, sequence), want(case.feed))
    replay = _Replay(names, results, session.get_providers())
    report = compare(lambda feed: results[id(feed)][1], replay, cases, atol=atol, rtol=rtol)
    count = len(meta["outputs"])
    report.layers = [_renamed(row, name) for row, (name, _) in zip(report.outputs[count:], layer_map)]
    report.outputs = report.outputs[:count]
    report.structure_problems = [f"state output {s['output']!r} is not in the graph: that state is not carried"
                                 for s in meta["states"] if s["output"] not in _outputs(session)]  # fmt: skip
    report.diverges = _first_step(report, cases, results, chunk, sequence)
    return report


def _outputs(session) -> list[str]:
    return [o.name for o in session.get_outputs()]


def _stepped(session, meta, feed, names, chunk, sequence) -> list[np.ndarray]:
    """The session's outputs ``names`` over the whole sequence in ``feed``, fed ``chunk`` steps a run."""
    steps = [[] for _ in names]
    for _, outs in runs(session, meta, feed, names, chunk):
        for store, value in zip(steps, outs):
            store.append(value)
    return [
        np.concatenate(parts, axis=1) if seq else np.stack(parts, axis=1)
        for parts, seq in zip(steps, sequence)
    ]


def runs(session, meta, feed, names, chunk):
    """Each run of a sequence fed ``chunk`` steps at a time from the initial state: (the run's whole feed, the
    outputs ``names``), the state outputs the graph has fed to the next run."""
    batch, length = next(iter(feed.values())).shape[:2]
    present = set(_outputs(session))
    states = {s["input"]: initial(s, batch) for s in meta["states"]}
    carried = [s for s in meta["states"] if s["output"] in present]
    wanted = [*names, *(s["output"] for s in carried)]
    for start in range(0, length, chunk):
        run = {**{name: value[:, start : start + chunk] for name, value in feed.items()}, **states}
        outs = session.run(wanted, run)
        yield run, outs[: len(names)]
        states.update({s["input"]: value for s, value in zip(carried, outs[len(names) :])})


def initial(state: dict, batch: int) -> np.ndarray:
    """A state's initial value: zeros; a growing state with no steps yet."""
    shape = [0 if d is None else d for d in state["shape"]]
    return np.zeros((batch, *shape), state.get("dtype", "float32"))


def _reference(keras_model, feed, chunk, sequence) -> list[np.ndarray]:
    """Keras's outputs for the whole sequence; the outputs without a time axis on each prefix of whole chunks."""
    with warnings.catch_warnings():  # Keras warns of a softmax over one key, which a first step has
        warnings.filterwarnings("ignore", message="You are using a softmax over axis")
        full = keras_outputs(keras_model, feed)
        if all(sequence):
            return full
        length = next(iter(feed.values())).shape[1]
        prefixes = [keras_outputs(keras_model, {k: v[:, :end] for k, v in feed.items()})
                    for end in range(chunk, length + 1, chunk)]  # fmt: skip
    return [f if seq else np.stack([p[i] for p in prefixes], axis=1)
            for i, (f, seq) in enumerate(zip(full, sequence))]  # fmt: skip


def _chunked(model, probed, feed, chunk, sequence) -> list[np.ndarray]:
    """Keras's own stateful run: states reset, then ``chunk`` steps a call, each output joined along time."""
    from edgeattn.convert.kerasmodel import walk_layers

    for layer in walk_layers(model):
        if getattr(layer, "stateful", False):
            layer.reset_state()
    length = next(iter(feed.values())).shape[1]
    parts = [
        keras_outputs(probed, {k: v[:, t : t + chunk] for k, v in feed.items()})
        for t in range(0, length, chunk)
    ]
    return [np.concatenate([p[i] for p in parts], axis=1) if seq else np.stack([p[i] for p in parts], axis=1)
            for i, seq in enumerate(sequence)]  # fmt: skip


class _Replay:
    """Looks like an onnxruntime session to ``cases.compare``: gives the stepped outputs computed already."""

    def __init__(self, names, results, providers):
        self.names, self.results, self.providers = names, results, providers

    def get_providers(self):
        return self.providers

    def get_outputs(self):
        return [type("Output", (), {"name": n})() for n in self.names]

    def run(self, names, feed):
        return self.results[id(feed)][0]


def _renamed(row, name):
    from dataclasses import replace

    return replace(row, name=name)


def _first_step(report, cases, results, chunk, sequence) -> str:
    """Where the stream first leaves the tolerance: the earliest step over every case, the first layer (in the
    model's order) or output there; empty when it does not."""
    rows = [*report.layers, *report.outputs]
    failing = [(i, row) for i, row in enumerate(rows) if not row.passed]
    if not failing:
        return ""
    order = [*range(len(report.outputs), len(rows)), *range(len(report.outputs))]  # result index of each row
    best = None
    for case in cases:
        got, want = results[id(case.feed)]
        for position, row in failing:
            g, w = got[order[position]], want[order[position]]
            if g.shape != w.shape:
                return f"{_what(row, report)} has shape {g.shape} over the stream, {w.shape} in Keras ({case.description})"
            over = np.abs(g.astype(np.float64) - w) > row.tol
            over |= np.isfinite(g) != np.isfinite(w)
            steps = np.nonzero(over.reshape(over.shape[0], over.shape[1], -1).any(axis=(0, 2)))[0]
            if not steps.size:
                continue
            step = steps[0] + 1 if sequence[order[position]] else (steps[0] + 1) * chunk
            if best is None or (step, position) < best[:2]:
                error = float(np.nanmax(np.abs(g[:, steps[0]].astype(np.float64) - w[:, steps[0]])))
                best = (step, position, row, case, error)
    if best is None:
        return ""
    step, _, row, case, error = best
    unit = f"step {step}" if chunk == 1 else f"step {step} (runs of {chunk} steps)"
    return (f"the stream first diverges at {unit} ({case.description}), in {_what(row, report)}: "
            f"max abs error {error:.3g} > tolerance {row.tol:.3g}")  # fmt: skip


def _what(row, report) -> str:
    return f"layer {row.name!r}" if row in report.layers else f"output {row.name!r}"


def verify_stream(proto, keras_src, batches, lengths=None, atol=1e-4, rtol=0.0, seed: int = 0, unsafe=False,
                  providers=None, custom_layers=(), layers: bool = True):  # fmt: skip
    """``verify.verify_against_keras`` for a model with ``edgeattn.stream``: its stream stepped through seeded
    sequences (``lengths``, default ``STEP_LENGTHS``) against the Keras model in ``keras_src``."""
    from edgeattn.convert import streaming
    from edgeattn.convert.kerasmodel import recorded_layers, vocab_size
    from edgeattn.convert.loading import load_model
    from edgeattn.graphs import graph
    from edgeattn.graphs.onnxfile import open_session

    meta = stream_meta(proto)
    problems = graph.check_structure(proto)
    model = load_model(keras_src, unsafe=unsafe, custom_layers=custom_layers).model
    reference = streaming.build(model, meta["kind"], meta.get("max_steps")).reference
    layer_map = recorded_layers(proto, reference) if layers else []
    import onnx

    tensors = [tensor for _, tensor in layer_map]
    probed = graph.with_outputs(proto, tensors, dtype=onnx.TensorProto.FLOAT) if tensors else proto
    session = open_session(probed, providers)
    stateful = model if meta["kind"] == "stateful" else None
    lengths = lengths or STEP_LENGTHS
    cases = sequence_cases(session, meta, lengths, fixed_batch(stateful) or batches, seed, vocab_size(model))
    report = check(session, reference, meta, cases, layer_map, atol, rtol, stateful)
    cap = meta.get("max_steps")
    if cap and max(lengths) > cap:
        report.inputs += (
            f" (capped at max_steps {cap}: past it, a causal attention reads the last {cap} steps)"
        )
    report.structure_problems = [*problems, *report.structure_problems]
    return report
