"""Latency and throughput, measured side by side, the contenders taking turns.

Contenders, all fed the same seeded inputs:

- ``floor`` (models with a fused recurrent node): a graph holding only the model's recurrent node(s), with the
  same weights, fed through onnxruntime's Python API with the very tensors that reach those nodes when the model
  runs on the inputs, each node writing exactly the outputs of it that the model reads (all hidden states when
  an attention reads them, the final state alone when only it is read). Any ONNX deployment pays at least this.
- ``edgeattn Predictor``: ``edgeattn.runtime.Predictor`` on the model, as an application would call it (with
  ``fuse_for_runtime=False``, the stored graph, and the default fused one beside it).
- other ONNX files (e.g. the straight tf2onnx export), run with ``InferenceSession.run``;
- with a Keras source: the model under ``tf.function`` (and eagerly), and with ``litert`` converted to LiteRT
  and run with XNNPACK. These run in a child process (``edgeattn.convert.bench_child``) whose TensorFlow gets the
  thread count before it starts; they take their turns like the others.

Every row says the thread count in effect, read back from the runtime where it can be (onnxruntime's session
options, TensorFlow's threading config). The contenders take turns in rounds (these machines drift; ratios
measured in turns hold better than absolute times). Latency is per call (p50, p99); throughput is samples per
second at the p50 latency. Ratios (x floor, x Predictor, x tf.function, x LiteRT) are taken round by round, the
contender's p50 over the reference's p50 in the same round, and given as their median with the lowest and
highest round.

This module does the timing: the rounds, the contenders timed in this process, and the TensorFlow child. The
report, the row names, the timed inputs and the floor model are in ``edgeattn.deploy.benchreport``, imported
back here.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx

from edgeattn.core import defaults
from edgeattn.core.errors import EdgeAttnError, InputError, UnsupportedModelError, from_reply

# The report and the floor model; all their names importable from here as before (TF_FUNCTION, LITERT too).
from edgeattn.deploy.benchreport import (  # noqa: F401
    FLOOR,
    FUSED,
    LITERT,
    PREDICTOR,
    REFERENCES,
    ROUNDS,
    TF_FUNCTION,
    BenchReport,
    Ratio,
    Row,
    _as_called,
    floor_feeds,
    floor_model,
    machine,
    timed_inputs,
)
from edgeattn.graphs import graph


def _time_calls(fn: Callable[[], object], seconds: float) -> list[int]:
    start = time.perf_counter()
    times = []
    while time.perf_counter() - start < seconds or len(times) < 3:
        t0 = time.perf_counter_ns()
        fn()
        times.append(time.perf_counter_ns() - t0)
    return times


class Contender:
    """A contender timed here: ``time(seconds)`` returns the call times in ns."""

    def __init__(self, fn: Callable[[], object], threads: int | None) -> None:
        self.fn, self.threads = fn, threads

    def warm(self) -> None:
        for _ in range(3):  # first calls allocate, trace, compile
            self.fn()

    def time(self, seconds: float) -> list[int]:
        return _time_calls(self.fn, seconds)


def measure(
    contenders: dict[str, Contender],
    batch: int,
    seconds: float,
    rounds: int = ROUNDS,
    progress: Callable[[str], None] | None = None,
) -> list[Row]:
    """Time each contender in turns (``rounds`` rounds, ``seconds`` each in all); p50/p99 per contender and
    the per-round ratios to the references present (see the module docstring)."""
    per_round: dict[str, list[list[int]]] = {name: [] for name in contenders}
    for contender in contenders.values():
        contender.warm()
    if progress:
        progress(
            f"timing batch {batch}: {len(contenders)} contenders in turns, {rounds} rounds, "
            f"about {seconds * len(contenders):.0f} s"
        )
    for _ in range(rounds):
        for name, contender in contenders.items():
            per_round[name].append(contender.time(seconds / rounds))
    rows = []
    for name, chunks in per_round.items():
        times = [t for chunk in chunks for t in chunk]
        p50, p99 = (float(np.percentile(times, q)) / 1000 for q in (50, 99))
        per = [float(np.percentile(chunk, 50)) / 1000 for chunk in chunks]
        rows.append(
            Row(name, batch, p50, p99, batch / (p50 / 1e6), contenders[name].threads, len(times), per)
        )
    by_name = {r.name: r for r in rows}
    for key, reference in REFERENCES.items():
        if reference in by_name:
            base = by_name[reference].round_p50_us
            for row in rows:
                ratios = [mine / theirs for mine, theirs in zip(row.round_p50_us, base)]
                row.x[key] = Ratio(float(np.median(ratios)), min(ratios), max(ratios))
    return rows


def run(
    model_path: str | os.PathLike,
    batches: tuple[int, ...] = defaults.BENCH_BATCHES,
    threads: int = defaults.BENCH_THREADS,
    keras_source: str | os.PathLike | None = None,
    litert: bool = False,
    eager: bool = False,
    others: dict[str, str | os.PathLike] | None = None,
    predictors: dict[str, object] | None = None,
    seconds: float = defaults.BENCH_SECONDS,
    time_steps: int | None = None,
    progress: Callable[[str], None] | None = None,
    custom_layers=(),
    fold_weights: bool = True,
    fuse_for_runtime: bool = True,
) -> BenchReport:
    """Benchmark ``model_path`` against the floor and the optional contenders. See the module docstring.

    ``others``: more ONNX files to time with a bare ``InferenceSession.run``, by row name (each with the
    Predictor's session options). ``predictors``: more ``Predictor`` objects to time, by row name (e.g. on an
    int8 file, or with ``fold_weights=False``); they take the same inputs.
    ``time_steps``: the length to time where the time axis is free (default: ``defaults.TIME_STEPS``).
    ``fuse_for_runtime``: the Predictor's (and the other files'); False adds the default Predictor as ``FUSED``.
    """
    from edgeattn.graphs.onnxfile import checked_copy, open_session
    from edgeattn.runtime import Predictor

    if (eager or litert) and keras_source is None:
        raise InputError("eager and LiteRT time the Keras source: give it (keras_source / --keras SRC)")
    with checked_copy(model_path) as (copy, data):  # read once: what was checked is what is timed
        proto = onnx.ModelProto.FromString(data)
        options = {"providers": ["cpu"], "threads": threads, "fold_weights": fold_weights}
        predictor = Predictor(copy, **options, fuse_for_runtime=fuse_for_runtime)
        if not fuse_for_runtime:  # the default beside it: its "x Predictor" is what the fusion gains
            predictors = {**(predictors or {}), FUSED: Predictor(copy, **options)}
    steps, feeds = timed_inputs(proto, batches, time_steps)
    report = BenchReport(os.fspath(model_path), machine(), threads, steps)
    if not fuse_for_runtime:
        report.notes[PREDICTOR] = "fuse_for_runtime=False: the stored graph, standard ops only"
    has_floor = any(n.op_type in graph.RECURRENT_OPS for n in proto.graph.node)
    if has_floor:
        floor, sources = floor_model(proto)
        floor_session = open_session(floor, ["cpu"], threads)
        floor_in = floor_feeds(proto, sources, feeds)
    other_sessions = {
        name: open_session(path, ["cpu"], threads, fold_weights, fuse_for_runtime)
        for name, path in (others or {}).items()
    }
    child = None
    if keras_source:
        child = _TensorFlowChild(keras_source, threads, eager, litert, custom_layers, report, progress, proto)
    try:
        for i, (batch, feed) in enumerate(zip(batches, feeds)):
            contenders: dict[str, Contender] = {}
            if has_floor:
                contenders[FLOOR] = Contender(
                    lambda f=floor_in[i]: floor_session.run(None, f), _ort_threads(floor_session)
                )
            called = _as_called(feed)
            contenders[PREDICTOR] = Contender(
                lambda f=called: predictor.predict(f), _ort_threads(predictor._session)
            )
            expected = predictor.predict(feed)
            for name, session in other_sessions.items():
                contenders[name] = Contender(lambda s=session, f=feed: s.run(None, f), _ort_threads(session))
            for name, p in (predictors or {}).items():
                contenders[name] = Contender(lambda p=p, f=called: p.predict(f), _ort_threads(p._session))
            if child:
                contenders.update(child.prepare(batch, feed))
            rows = measure(contenders, batch, seconds, progress=progress)
            for row in rows:
                row.max_abs_vs_predictor = _agreement(
                    row.name, feed, expected, other_sessions, predictors, child
                )
            report.rows += rows
    finally:
        if child:
            child.close()
    return report


def _ort_threads(session) -> int | None:
    """The intra-op thread count an onnxruntime session was given (0 or less: onnxruntime's own choice)."""
    threads = session.get_session_options().intra_op_num_threads
    return threads if threads > 0 else None


def _agreement(name, feed, expected, other_sessions, predictors, child) -> float | None:
    """How far a contender's first output is from the Predictor's, on the timed inputs (None: not comparable,
    as for the floor, which computes only the recurrent part)."""
    if name == PREDICTOR:
        return 0.0
    if name in other_sessions:
        got = other_sessions[name].run(None, feed)[0]
    elif name in (predictors or {}):
        got = predictors[name].predict(feed)
    elif child is not None and name in child.outputs:
        got = child.outputs[name]
    else:
        return None
    got = np.asarray(got)
    return float(np.max(np.abs(got.astype(np.float64) - expected))) if got.shape == expected.shape else None


class _Remote(Contender):
    """A contender that runs in the TensorFlow child; timed there, in its turn."""

    def __init__(self, child: _TensorFlowChild, name: str, threads: int | None) -> None:
        self.child, self.name, self.threads = child, name, threads

    def warm(self) -> None:
        pass  # the child warmed it up when it prepared it

    def time(self, seconds: float) -> list[int]:
        return self.child.ask("time", name=self.name, seconds=seconds)["times"]


class _TensorFlowChild:
    """The child process that runs the TensorFlow contenders (``edgeattn.convert.bench_child``)."""

    def __init__(
        self, source, threads, eager, litert, custom_layers, report: BenchReport, progress, proto
    ) -> None:
        if progress:
            progress(f"loading {source} in a TensorFlow child process ({threads} intra-op thread(s))")
        from edgeattn.core.sandbox import child_command, child_env

        # Isolated (python -I), in a private empty folder of its own: no module from the working folder or
        # from beside the model runs. The parent's files (inputs, outputs, the child's stderr) sit beside it.
        self.folder = Path(tempfile.mkdtemp(prefix="edgeattn-bench-"))
        self.proc = None
        try:
            cwd, tmp = self.folder / "cwd", self.folder / "tmp"  # its working folder; its temporary files
            cwd.mkdir()
            tmp.mkdir()
            self.log = self.folder / "stderr.txt"  # a file, not a pipe: TensorFlow's chatter cannot fill it
            with open(self.log, "w") as log:
                self.proc = subprocess.Popen(
                    child_command("edgeattn.convert.bench_child", str(threads)),
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=log,
                    text=True,
                    env=child_env(TF_CPP_MIN_LOG_LEVEL="3", TMPDIR=str(tmp), TEMP=str(tmp), TMP=str(tmp)),
                    cwd=cwd,
                )
            self._load(source, eager, litert, custom_layers, report, proto)
        except BaseException:
            self.close()  # what this run made goes, also on error
            raise

    def _load(self, source, eager, litert, custom_layers, report: BenchReport, proto) -> None:
        self.report = report
        self.outputs: dict[str, np.ndarray] = {}
        self.threads: dict[str, int] = {}
        from edgeattn.graphs.cases import free_input_shapes
        from edgeattn.graphs.onnxfile import SIGNATURE_OUTPUTS_KEY

        layers = [_absolute(p) for p in custom_layers]
        # what a source that records no inputs is built on, and a SavedModel signature's outputs in ONNX order
        shapes = [[name, dtype, list(shape)] for name, dtype, shape in free_input_shapes(proto)]
        order = json.loads(
            {p.key: p.value for p in proto.metadata_props}.get(SIGNATURE_OUTPUTS_KEY) or "null"
        )
        loaded = self.ask(
            "load",
            source=os.path.abspath(os.fspath(source)),
            custom_layers=layers,
            eager=eager,
            litert=litert,
            input_shapes=shapes,
            output_order=order,
        )
        self.threads.update(loaded["threads"])
        report.notes.update(loaded["notes"])

    def ask(self, command: str, **request) -> dict:
        try:
            self.proc.stdin.write(json.dumps({"cmd": command, **request}) + "\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        except BrokenPipeError:
            line = ""
        if not line:
            self.proc.wait()
            tail = [s for s in self.log.read_text(errors="replace").splitlines() if s.strip()]
            raise EdgeAttnError(
                f"the TensorFlow child process of bench ended (exit status {self.proc.returncode}): "
                + (tail[-1] if tail else "no message")
            )
        reply = json.loads(line)
        if "error" in reply:
            raise from_reply(reply, UnsupportedModelError)
        return reply

    def prepare(self, batch: int, feed: dict) -> dict[str, Contender]:
        inputs, outputs = self.folder / f"in-{batch}.npz", self.folder / f"out-{batch}.npz"
        np.savez(inputs, **feed)
        reply = self.ask("prepare", batch=batch, inputs=os.fspath(inputs), outputs=os.fspath(outputs))
        self.threads.update(reply["threads"])
        self.report.notes.update(reply["notes"])
        self.report.skipped.update(reply["skipped"])
        with np.load(outputs) as data:
            self.outputs = {name: data[f"c{i}"] for i, name in enumerate(reply["contenders"])}
        return {name: _Remote(self, name, self.threads.get(name)) for name in reply["contenders"]}

    def close(self) -> None:
        import shutil

        if self.proc is not None:
            try:
                self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                self.proc.stdin.close()
                self.proc.wait(timeout=30)
            except (BrokenPipeError, OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
            for pipe in (self.proc.stdout,):
                pipe.close()
        shutil.rmtree(self.folder, ignore_errors=True)


def _absolute(layer) -> str:
    """A --custom-layers entry for the child, which runs in its own folder: a file as an absolute path; a
    module name as given."""
    text = os.fspath(layer)
    return os.path.abspath(text) if text.endswith(".py") or os.sep in text or "/" in text else text


def litert_bytes(concrete_function) -> bytes:
    """A concrete TensorFlow function as a LiteRT (.tflite) flatbuffer, builtin ops only."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete_function])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    return converter.convert()
