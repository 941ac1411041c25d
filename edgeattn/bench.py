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
  and run with XNNPACK. These run in a child process (``edgeattn.bench_child``) whose TensorFlow gets the
  thread count before it starts; they take their turns like the others.

Every row says the thread count in effect, read back from the runtime where it can be (onnxruntime's session
options, TensorFlow's threading config). The contenders take turns in rounds (these machines drift; ratios
measured in turns hold better than absolute times). Latency is per call (p50, p99); throughput is samples per
second at the p50 latency. Ratios (x floor, x Predictor, x tf.function, x LiteRT) are taken round by round, the
contender's p50 over the reference's p50 in the same round, and given as their median with the lowest and
highest round.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from edgeattn import defaults, graph
from edgeattn.errors import EdgeAttnError, InputError, UnsupportedModelError, from_reply

FLOOR = "floor (bare recurrent node)"
PREDICTOR = "edgeattn Predictor"
FUSED = "Predictor fused for runtime"  # the default, beside a Predictor on the stored graph
TF_FUNCTION = "Keras under tf.function"
LITERT = "LiteRT (XNNPACK)"
REFERENCES = {"floor": FLOOR, "Predictor": PREDICTOR, "tf.function": TF_FUNCTION, "LiteRT": LITERT}
ROUNDS = 5


@dataclass
class Ratio:
    """A contender's p50 over a reference's p50, round by round: the median and the range over rounds."""

    median: float
    low: float
    high: float

    def __str__(self) -> str:
        return f"{self.median:.2f} ({self.low:.2f}-{self.high:.2f})"


@dataclass
class Row:
    name: str
    batch: int
    p50_us: float
    p99_us: float
    samples_per_s: float
    threads: int | None = None  # intra-op threads in effect (None: the runtime's own choice)
    calls: int = 0
    round_p50_us: list[float] = field(default_factory=list)
    x: dict[str, Ratio] = field(
        default_factory=dict
    )  # by reference: "floor", "Predictor", "tf.function", "LiteRT"
    max_abs_vs_predictor: float | None = None  # the contender's first output against the Predictor's

    @property
    def x_floor(self) -> float | None:
        return self.x["floor"].median if "floor" in self.x else None


@dataclass
class BenchReport:
    model: str
    machine: str
    threads: int
    time_steps: int | None
    rows: list[Row] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)

    def row(self, name: str, batch: int) -> Row | None:
        return next((r for r in self.rows if r.name == name and r.batch == batch), None)

    @property
    def references(self) -> list[str]:
        """The ratio columns this report has ("floor", "Predictor", "tf.function", "LiteRT")."""
        return [key for key, name in REFERENCES.items() if any(r.name == name for r in self.rows)]

    def to_dict(self) -> dict:
        return asdict(self)


def machine() -> str:
    """One line about this machine: CPU model, cores, Python, onnxruntime."""
    import onnxruntime as ort

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (
        f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, onnxruntime {ort.__version__}"
    )


def floor_model(model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, str]]:
    """A graph of the model's recurrent nodes alone, with their weights (float, also for a quantized file), each
    writing exactly those of its outputs that the model reads: ``Y`` (all hidden states) as ``Y<k>``, ``Y_h``
    and ``Y_c`` (the final ones) as ``Y_h<k>`` and ``Y_c<k>`` (``Y_h`` where the model reads none).

    Returns the graph and, for each of its inputs, the tensor of ``model`` that feeds that node (time-major),
    so that the floor can be fed what the node gets when the model runs.
    """
    constants = _float_weights(model)
    read = {name for n in model.graph.node for name in n.input} | {o.name for o in model.graph.output}
    nodes, inputs, outputs, used, sources = [], [], [], [], {}
    for k, node in enumerate(n for n in model.graph.node if n.op_type in graph.RECURRENT_OPS):
        if any(name not in constants for name in node.input[1:4] if name):
            raise UnsupportedModelError(f"the recurrent node {node.name!r} has no constant weights")
        w = constants[node.input[1]]
        hidden = next(a.i for a in node.attribute if a.name == "hidden_size")
        x_name, dirs, f32 = f"X{k}", int(w.dims[0]), onnx.TensorProto.FLOAT
        sources[x_name] = node.input[0]
        inputs.append(helper.make_tensor_value_info(x_name, f32, ["time", "batch", int(w.dims[2])]))
        names = [f"{y}{k}" if o and o in read else "" for y, o in zip(("Y", "Y_h", "Y_c"), node.output)]
        names = names if any(names) else ["", f"Y_h{k}"]  # nothing reads it: the final state, as the work
        shapes = (["time", dirs, "batch", hidden], [dirs, "batch", hidden], [dirs, "batch", hidden])
        outputs += [helper.make_tensor_value_info(n, f32, shape) for n, shape in zip(names, shapes) if n]
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        del copy.input[:], copy.output[:]
        copy.input.extend([x_name, *node.input[1:4]])
        copy.output.extend(names)
        nodes.append(copy)
        used.extend(node.input[1:4])
    if not nodes:
        raise UnsupportedModelError("the model has no fused recurrent node to measure a floor against")
    g = helper.make_graph(nodes, "floor", inputs, outputs, [constants[n] for n in dict.fromkeys(used) if n])
    floor = helper.make_model(g, opset_imports=[helper.make_opsetid("", graph.opset_of(model))])
    return floor, sources


def floor_feeds(model: onnx.ModelProto, sources: dict[str, str], feeds: list[dict]) -> list[dict]:
    """For each feed of ``model``, the floor's feed: the tensors that reach the recurrent nodes (the model is
    run once per feed with those tensors as extra outputs)."""
    from edgeattn.onnxfile import tensor_values

    return [
        {x: np.ascontiguousarray(values[source]) for x, source in sources.items()}
        for values in tensor_values(model, sources.values(), feeds)
    ]


def _float_weights(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    """Float initializers, including those a quantized file stores behind ``Cast``/``DequantizeLinear``
    (the floor is always the float node: what the quantized file must also pay at least)."""
    from onnx import numpy_helper

    found = {t.name: t for t in model.graph.initializer}
    arrays = {name: numpy_helper.to_array(t) for name, t in found.items()}
    for node in model.graph.node:
        if node.op_type == "Cast" and node.input[0] in arrays:
            value = arrays[node.input[0]].astype(np.float32)
        elif node.op_type == "DequantizeLinear" and all(i in arrays for i in node.input if i):
            q, scale = arrays[node.input[0]].astype(np.float32), arrays[node.input[1]]
            zero = arrays[node.input[2]].astype(np.float32) if len(node.input) > 2 and node.input[2] else 0.0
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
            if scale.ndim == 1 and scale.size > 1:
                shape = [1] * q.ndim
                shape[axis] = -1
                scale = scale.reshape(shape)
                zero = zero.reshape(shape) if isinstance(zero, np.ndarray) else zero
            value = (q - zero) * scale
        else:
            continue
        arrays[node.output[0]] = value
        found[node.output[0]] = numpy_helper.from_array(value.astype(np.float32), node.output[0])
    return found


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
    from edgeattn.onnxfile import checked_copy, open_session
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


def timed_inputs(proto: onnx.ModelProto, batches, time_steps: int | None = None) -> tuple[int | None, list]:
    """The time steps timed (None: no time axis) and, per batch size, the seeded feed every contender gets
    (tokens for integer inputs). ``time_steps``: where the time axis is free (default: ``defaults.TIME_STEPS``)."""
    from edgeattn.verify import input_specs, make_cases

    specs = input_specs(proto)
    time_free = any(s.time_free for s in specs)
    fixed = next((s.shape[1] for s in specs if len(s.shape) > 1 and isinstance(s.shape[1], int)), None)
    if time_steps is not None and not time_free:
        raise InputError(f"--time is for models with a free time axis; this one's is fixed at {fixed}")
    steps, vocab = (time_steps or defaults.TIME_STEPS) if time_free else fixed, graph.vocab_size(proto)
    lengths = [steps] if time_free else None
    return steps, [make_cases(specs, batches=(b,), lengths=lengths, vocab=vocab)[0].feed for b in batches]


def _as_called(feed: dict):
    """What an application hands the Predictor: the array itself for a one-input model, else the dict."""
    return next(iter(feed.values())) if len(feed) == 1 else feed


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
    """The child process that runs the TensorFlow contenders (``edgeattn.bench_child``)."""

    def __init__(
        self, source, threads, eager, litert, custom_layers, report: BenchReport, progress, proto
    ) -> None:
        if progress:
            progress(f"loading {source} in a TensorFlow child process ({threads} intra-op thread(s))")
        from edgeattn.sandbox import child_command, child_env

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
                    child_command("edgeattn.bench_child", str(threads)),
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
        from edgeattn.onnxfile import SIGNATURE_OUTPUTS_KEY
        from edgeattn.verify import input_shapes_of

        layers = [_absolute(p) for p in custom_layers]
        # what a source that records no inputs is built on, and a SavedModel signature's outputs in ONNX order
        shapes = [[s.name, s.dtype, list(s.shape)] for s in input_shapes_of(proto)]
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
