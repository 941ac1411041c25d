"""Latency and throughput, measured side by side in one process.

Contenders, each on the same seeded input:

- ``floor``: a graph holding only the model's fused recurrent node(s), with the same weights, fed time-major
  directly through onnxruntime's Python API. Any ONNX deployment of the model pays at least this.
- ``edgeattn Predictor``: ``edgeattn.runtime.Predictor`` on the model, as an application would call it.
- other ONNX files (e.g. the straight tf2onnx export), run with ``InferenceSession.run``;
- with a Keras source: the model under ``tf.function`` and (optionally) eagerly;
- with ``litert``: the model converted to LiteRT (TFLite) and run with XNNPACK.

The contenders take turns in rounds (these machines drift; ratios measured in one process hold better than
absolute times). Latency is per call (p50, p99); throughput is samples per second at the p50 latency.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import onnx
from onnx import helper

from edgeattn import graph
from edgeattn.errors import InputError, UnsupportedModelError, first_line

FLOOR = "floor (bare recurrent node)"
PREDICTOR = "edgeattn Predictor"


@dataclass
class Row:
    name: str
    batch: int
    p50_us: float
    p99_us: float
    samples_per_s: float
    x_floor: float | None = None
    calls: int = 0


@dataclass
class BenchReport:
    model: str
    machine: str
    threads: int
    time_steps: int
    rows: list[Row] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)

    def row(self, name: str, batch: int) -> Row | None:
        return next((r for r in self.rows if r.name == name and r.batch == batch), None)

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


def floor_model(model: onnx.ModelProto, time_steps: int) -> tuple[onnx.ModelProto, dict[str, int]]:
    """A graph of the model's recurrent nodes alone, each fed from its own time-major input.

    Returns the model and its inputs' feature counts by name (each input is (time_steps, batch, features)).
    """
    constants = _float_weights(model)
    nodes, inputs, outputs, used, features_of = [], [], [], [], {}
    for k, node in enumerate(n for n in model.graph.node if n.op_type in graph.RECURRENT_OPS):
        if any(name not in constants for name in node.input[1:4] if name):
            raise UnsupportedModelError(f"the recurrent node {node.name!r} has no constant weights")
        w = constants[node.input[1]]
        features = int(w.dims[2])
        hidden = next(a.i for a in node.attribute if a.name == "hidden_size")
        directions = int(w.dims[0])
        x_name, y_name = f"X{k}", f"Y{k}"
        features_of[x_name] = features
        inputs.append(
            helper.make_tensor_value_info(x_name, onnx.TensorProto.FLOAT, [time_steps, "batch", features])
        )
        outputs.append(
            helper.make_tensor_value_info(y_name, onnx.TensorProto.FLOAT, [directions, "batch", hidden])
        )
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        del copy.input[:]
        copy.input.extend([x_name, *node.input[1:4]])
        del copy.output[:]
        copy.output.extend(["", y_name])
        nodes.append(copy)
        used.extend(node.input[1:4])
    if not nodes:
        raise UnsupportedModelError("the model has no fused recurrent node to measure a floor against")
    g = helper.make_graph(nodes, "floor", inputs, outputs, [constants[n] for n in dict.fromkeys(used) if n])
    floor = helper.make_model(g, opset_imports=[helper.make_opsetid("", graph.opset_of(model))])
    return floor, features_of


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


def _time_calls(fn: Callable[[], object], seconds: float, max_calls: int = 20000) -> list[int]:
    start = time.perf_counter()
    times = []
    while len(times) < max_calls and (time.perf_counter() - start < seconds or len(times) < 3):
        t0 = time.perf_counter_ns()
        fn()
        times.append(time.perf_counter_ns() - t0)
    return times


def measure(
    contenders: dict[str, Callable[[], object]],
    batch: int,
    seconds: float,
    rounds: int = 5,
    progress: Callable[[str], None] | None = None,
) -> list[Row]:
    """Time each contender in turns (``rounds`` rounds, ``seconds`` each in all); p50/p99 per contender."""
    samples: dict[str, list[int]] = {name: [] for name in contenders}
    for fn in contenders.values():  # warm-up: first calls allocate, trace, compile
        for _ in range(3):
            fn()
    if progress:
        progress(
            f"timing batch {batch}: {len(contenders)} contenders, {rounds} rounds, about {seconds * len(contenders):.0f} s"
        )
    for _ in range(rounds):
        for name, fn in contenders.items():
            samples[name] += _time_calls(fn, seconds / rounds)
    rows = []
    for name, times in samples.items():
        p50 = float(np.percentile(times, 50)) / 1000
        p99 = float(np.percentile(times, 99)) / 1000
        rows.append(Row(name, batch, p50, p99, batch / (p50 / 1e6), calls=len(times)))
    floor = next((r for r in rows if r.name == FLOOR), None)
    for row in rows:
        row.x_floor = row.p50_us / floor.p50_us if floor else None
    return rows


def run(
    model_path: str | os.PathLike,
    batches: tuple[int, ...] = (1, 256),
    threads: int = 1,
    keras_source: str | os.PathLike | None = None,
    litert: bool = False,
    eager: bool = False,
    others: dict[str, str | os.PathLike] | None = None,
    seconds: float = 2.0,
    time_steps: int | None = None,
    progress: Callable[[str], None] | None = None,
    custom_layers=(),
) -> BenchReport:
    """Benchmark ``model_path`` against the floor and the optional contenders. See the module docstring."""
    from edgeattn.onnxfile import load_onnx, open_session
    from edgeattn.runtime import Predictor
    from edgeattn.verify import input_specs, make_cases

    proto = load_onnx(model_path)
    predictor = Predictor(model_path, providers=["cpu"], threads=threads)
    if len(predictor.inputs) != 1:
        raise InputError("edgeattn bench measures single-input models")
    spec = predictor.inputs[0]
    steps = time_steps or (spec.shape[1] if len(spec.shape) > 1 and isinstance(spec.shape[1], int) else 10)
    report = BenchReport(str(model_path), machine(), threads, steps)
    floor, floor_inputs = floor_model(proto, steps)
    floor_session = open_session(floor, ["cpu"], threads)
    other_sessions = {name: open_session(path, ["cpu"], threads) for name, path in (others or {}).items()}
    keras_model = _load_keras(keras_source, threads, progress, custom_layers) if keras_source else None

    for batch in batches:
        (case,) = make_cases(input_specs(proto), batches=(batch,), lengths=[steps])
        x = case.feed[spec.name]
        rng = np.random.default_rng(0)
        floor_feed = {
            name: rng.uniform(-1, 1, (steps, batch, features)).astype(np.float32)
            for name, features in floor_inputs.items()
        }
        contenders: dict[str, Callable[[], object]] = {
            FLOOR: lambda f=floor_feed: floor_session.run(None, f),
            PREDICTOR: lambda x=x: predictor.predict(x),
        }
        for name, session in other_sessions.items():
            feed = {session.get_inputs()[0].name: x}
            contenders[name] = lambda s=session, f=feed: s.run(None, f)
        if keras_model is not None:
            contenders.update(_keras_contenders(keras_model, x, eager, litert, threads, report))
        report.rows += measure(contenders, batch, seconds, progress=progress)
    return report


def _load_keras(source, threads: int, progress, custom_layers=()):
    from edgeattn.loading import load_model

    if progress:
        progress(f"loading {source} (TensorFlow)")
    import tensorflow as tf

    try:  # possible only before TensorFlow has started its runtime
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        pass
    return load_model(source, custom_layers=custom_layers).model


def _keras_contenders(
    model, x: np.ndarray, eager: bool, litert: bool, threads: int, report: BenchReport
) -> dict:
    import tensorflow as tf

    report.notes["Keras"] = f"TensorFlow {tf.__version__}, Keras {_version('keras')}"
    spec = tf.TensorSpec((None, *x.shape[1:]), tf.as_dtype(x.dtype))
    function = tf.function(lambda t: model(t, training=False))
    tensor = tf.constant(x)
    traced = tf.function(lambda t: model(t, training=False), input_signature=[spec])
    contenders = {"Keras under tf.function": lambda: np.asarray(traced(tensor))}
    if eager:
        contenders["Keras eager"] = lambda: np.asarray(model(tensor, training=False))
    if litert:
        try:
            contenders["LiteRT (XNNPACK)"], report.notes["LiteRT"] = _litert(function, spec, x, threads)
        except Exception as exc:  # conversion failures come in many types
            report.skipped["LiteRT (XNNPACK)"] = first_line(exc)
    return contenders


def litert_bytes(function, spec) -> bytes:
    """The model as a LiteRT (.tflite) flatbuffer, builtin ops only."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_concrete_functions([function.get_concrete_function(spec)])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    return converter.convert()


def _version(module: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(module)
    except PackageNotFoundError:
        return "?"


def _litert(function, spec, x: np.ndarray, threads: int) -> tuple[Callable[[], object], str]:
    """A call of the LiteRT interpreter (ai-edge-litert when installed, else TensorFlow's), and its name."""
    import tensorflow as tf

    try:
        from ai_edge_litert.interpreter import Interpreter

        runtime = f"ai-edge-litert {_version('ai-edge-litert')}"
    except ImportError:
        Interpreter = tf.lite.Interpreter
        runtime = f"tf.lite.Interpreter (TensorFlow {tf.__version__})"

    # A fixed batch: LiteRT lowers the LSTM's tensor lists only when every shape is static.
    static = tf.TensorSpec(x.shape, spec.dtype)
    interpreter = Interpreter(model_content=litert_bytes(function, static), num_threads=threads)
    index = interpreter.get_input_details()[0]["index"]
    interpreter.allocate_tensors()
    out = interpreter.get_output_details()[0]["index"]

    def call():
        interpreter.set_tensor(index, x)
        interpreter.invoke()
        return interpreter.get_tensor(out)

    return call, runtime
