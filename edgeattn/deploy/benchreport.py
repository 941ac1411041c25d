"""What ``edgeattn bench`` reports, and the model side of what it times (see ``edgeattn.deploy.bench``).

- The row names (``FLOOR``, ``PREDICTOR``, ``FUSED``, ``TF_FUNCTION``, ``LITERT``), the references that ratios
  are taken against (``REFERENCES``) and the number of rounds (``ROUNDS``).
- ``Ratio``, ``Row``, ``BenchReport``: a contender's p50 over a reference's, round by round; one contender at
  one batch size; the whole report (``to_dict`` for JSON). ``machine``: one line about this machine.
- ``timed_inputs``: the seeded feed every contender gets, per batch size.
- ``floor_model``, ``floor_feeds``: a graph of the model's recurrent nodes alone (float weights, also for a
  quantized file), and what reaches those nodes when the model runs, to feed it.

Light: numpy and onnx (onnxruntime for ``machine``); nothing is timed here, and no TensorFlow runs.
"""

from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass, field

import numpy as np
import onnx
from onnx import helper

from edgeattn.core import defaults
from edgeattn.core.errors import InputError, UnsupportedModelError
from edgeattn.graphs import graph

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


def timed_inputs(proto: onnx.ModelProto, batches, time_steps: int | None = None) -> tuple[int | None, list]:
    """The time steps timed (None: no time axis) and, per batch size, the seeded feed every contender gets
    (tokens for integer inputs). ``time_steps``: where the time axis is free (default: ``defaults.TIME_STEPS``)."""
    from edgeattn.graphs.cases import input_specs, make_cases

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
    from edgeattn.graphs.onnxfile import tensor_values

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
