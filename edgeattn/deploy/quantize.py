"""Smaller files: weights stored as int8 (``DequantizeLinear``) or float16 (``Cast``), standard operators only.

- ``int8``: every float weight matrix (at least ``min_elements`` values, at least 8 per channel) is stored as
  int8 with a float scale per output channel (symmetric, zero point 0) and turned back into float32 by a ``DequantizeLinear``
  node that feeds the op that used it. The ops themselves stay float (``LSTM``, ``MatMul``, ...), so the file
  runs on any onnxruntime and needs none of the ``com.microsoft`` quantized kernels (onnxruntime's own
  ``quantize_dynamic`` would emit ``DynamicQuantizeLSTM``).
- ``fp16``: the same tensors stored as float16, each behind a ``Cast`` to float32.

The error is measured, not assumed: the float and the quantized model run on the same inputs (the user's, or
seeded in-range ones), and the worst output error is reported relative to the output's scale (the larger
of the float model's peak-to-peak range and peak magnitude on those inputs). A model whose error exceeds ``max_error``
is not written.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgeattn.core import defaults
from edgeattn.core.errors import CheckFailedError, InputError
from edgeattn.core.files import check_writable, write_atomic
from edgeattn.graphs import cases as verify
from edgeattn.graphs import graph, onnxfile
from edgeattn.runtime import decode_array, external_locations

MODES = ("int8", "fp16")
DEFAULT_MAX_ERROR = defaults.MAX_ERROR
MIN_PER_CHANNEL = 8  # values per scale below which one scale serves the whole tensor


@dataclass
class OutputError:
    name: str
    max_abs: float
    scale: float

    @property
    def relative(self) -> float:
        return self.max_abs / self.scale


@dataclass
class QuantizeResult:
    path: Path
    mode: str
    size_bytes: int
    float_bytes: int
    tensors: int
    outputs: list[OutputError] = field(default_factory=list)
    max_error: float = 0.0
    cases: str = ""

    @property
    def ratio(self) -> float:
        return self.size_bytes / self.float_bytes

    @property
    def worst(self) -> OutputError:
        return max(self.outputs, key=lambda o: o.relative)

    @property
    def passed(self) -> bool:
        return self.worst.relative <= self.max_error


def quantize(
    src: str | os.PathLike,
    out: str | os.PathLike,
    mode: str,
    max_error: float | None = None,
    force: bool = False,
    min_elements: int = 16,
    inputs_file: str | os.PathLike | None = None,
) -> QuantizeResult:
    """Write a copy of the ONNX model ``src`` with its weights stored as ``mode`` ("int8" or "fp16").

    The error is measured on ``inputs_file`` (.npy/.npz: real data, the figure that matters) or else on seeded
    in-range inputs: U[0, 1) and U[-1, 1) samples, batches 1, 7 and 64 (and several lengths on a free time
    axis).
    """
    if mode not in MODES:
        raise InputError(f"--mode must be one of {', '.join(MODES)}, got {mode!r}")
    out = Path(out)
    if out.suffix.lower() != ".onnx":
        raise InputError(f"{out}: the output must end in .onnx")
    check_writable(out, force)
    max_error = DEFAULT_MAX_ERROR[mode] if max_error is None else max_error
    model = onnxfile.load_onnx(src)  # external data, if any, was checked to stay in the model's folder
    if external_locations(model):
        from onnx.external_data_helper import load_external_data_for_model

        load_external_data_for_model(model, str(Path(src).resolve().parent))
    if graph.opset_of(model) < 13:
        raise InputError(f"{src}: per-channel weights need opset 13 or newer; re-export with --opset 17")
    float_bytes = len(model.SerializeToString())
    quantized = onnx.ModelProto()
    quantized.CopyFrom(model)
    count = (store_int8 if mode == "int8" else store_fp16)(quantized, min_elements)
    problems = graph.check_structure(quantized)
    if problems:
        raise CheckFailedError(f"the {mode} model is not fit for the edge: {problems[0]}")

    specs = verify.input_specs(model)
    if inputs_file is not None:
        cases = verify.cases_from_file(inputs_file, specs)
    else:
        cases = verify.make_cases(specs, vocab=graph.vocab_size(model), wide=False)
    float_session = onnxfile.open_session(model, ["cpu"])
    quant_session = onnxfile.open_session(quantized, ["cpu"])
    names = [o.name for o in model.graph.output]
    errors = {name: 0.0 for name in names}
    lows = {name: np.inf for name in names}
    highs = {name: -np.inf for name in names}
    for case in cases:
        expected = float_session.run(names, case.feed)
        got = quant_session.run(names, case.feed)
        for name, e, g in zip(names, expected, got):
            errors[name] = max(errors[name], float(np.max(np.abs(g.astype(np.float64) - e))))
            lows[name], highs[name] = min(lows[name], float(e.min())), max(highs[name], float(e.max()))
    outputs = [OutputError(name, errors[name], _scale(lows[name], highs[name])) for name in names]

    result = QuantizeResult(out, mode, 0, float_bytes, count, outputs, max_error, verify.describe(cases))
    if not result.passed:
        worst = result.worst
        raise CheckFailedError(
            f"{mode} error {worst.relative:.2%} of the output scale on {worst.name!r} "
            f"(max abs {worst.max_abs:.3g}, scale {worst.scale:.3g}) exceeds --max-error {max_error:.2%}",
            hint="nothing was written; fp16 keeps more precision, or raise --max-error if that is acceptable",
        )
    _stamp(quantized, mode, outputs, quant_session, max_error)
    data = quantized.SerializeToString()
    result.size_bytes = len(data)
    write_atomic(out, data, force=force)
    return result


def _scale(low: float, high: float) -> float:
    """The output's scale on the inputs: the larger of its peak-to-peak range and its magnitude (else 1).

    The range alone shrinks on a few similar samples; the magnitude alone ignores an offset.
    """
    return max(high - low, abs(low), abs(high)) or 1.0


def _weights(model: onnx.ModelProto, min_elements: int) -> list[onnx.TensorProto]:
    """Float32 initializers big enough to be worth storing smaller."""
    return [
        t
        for t in model.graph.initializer
        if t.data_type == onnx.TensorProto.FLOAT and int(np.prod(t.dims, dtype=np.int64)) >= min_elements
    ]


def _channel_axis(tensor: onnx.TensorProto, model: onnx.ModelProto) -> int:
    """The axis with one scale per slice: rows of a Gather table, gates of a recurrent W/R, columns else."""
    users = [n for n in model.graph.node if tensor.name in n.input]
    if any(u.op_type == "Gather" and u.input[0] == tensor.name for u in users):
        return 0
    if any(u.op_type in graph.RECURRENT_OPS for u in users) and len(tensor.dims) == 3:
        return 1
    return len(tensor.dims) - 1


def store_int8(model: onnx.ModelProto, min_elements: int = 16) -> int:
    """Store weights as int8 + per-channel float scales behind ``DequantizeLinear``. Returns the count."""
    # Matrices only, with enough values per channel: biases and per-feature vectors (a scale per handful of
    # values) stay float; they are small and the error they would add is not.
    tensors = [
        t
        for t in _weights(model, min_elements)
        if len(t.dims) >= 2 and np.prod(t.dims) // t.dims[_channel_axis(t, model)] >= MIN_PER_CHANNEL
    ]
    nodes = []
    for tensor in tensors:
        w = numpy_helper.to_array(tensor).astype(np.float32)
        axis = _channel_axis(tensor, model)
        peak = np.max(np.abs(w), axis=tuple(a for a in range(w.ndim) if a != axis))
        scale = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
        shaped = scale.reshape([-1 if a == axis else 1 for a in range(w.ndim)])
        q = np.clip(np.round(w / shaped), -127, 127).astype(np.int8)
        q_name, s_name = f"{tensor.name}_int8", f"{tensor.name}_scale"
        model.graph.initializer.extend(
            [numpy_helper.from_array(q, q_name), numpy_helper.from_array(scale, s_name)]
        )
        # No zero point: it defaults to 0 of the int8 type (symmetric quantization).
        nodes.append(helper.make_node("DequantizeLinear", [q_name, s_name], [tensor.name], axis=axis))
    _replace(model, tensors, nodes)
    return len(tensors)


def store_fp16(model: onnx.ModelProto, min_elements: int = 16) -> int:
    """Store weights as float16 behind a ``Cast`` to float32. Returns the count."""
    tensors = _weights(model, min_elements)
    nodes = []
    for tensor in tensors:
        half = numpy_helper.to_array(tensor).astype(np.float16)
        if not np.all(np.isfinite(half)):
            raise CheckFailedError(f"weight {tensor.name!r} has values beyond float16's range (65504)")
        model.graph.initializer.append(numpy_helper.from_array(half, f"{tensor.name}_fp16"))
        nodes.append(
            helper.make_node("Cast", [f"{tensor.name}_fp16"], [tensor.name], to=onnx.TensorProto.FLOAT)
        )
    _replace(model, tensors, nodes)
    return len(tensors)


def _replace(model: onnx.ModelProto, tensors: list, nodes: list) -> None:
    """Drop the float initializers and put the nodes that now produce them first (topological order)."""
    names = {t.name for t in tensors}
    for tensor in [t for t in model.graph.initializer if t.name in names]:
        model.graph.initializer.remove(tensor)
    for info in [i for i in model.graph.input if i.name in names]:  # old exporters list weights as inputs
        model.graph.input.remove(info)
    existing = list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend(nodes + existing)


def _stamp(model: onnx.ModelProto, mode: str, outputs: list[OutputError], session, max_error: float) -> None:
    """Record the quantization. The stored reference set keeps Keras's outputs; it gets, per output, the
    absolute tolerance this quantization was accepted with (``max_error`` x the output's scale), so that
    ``verify --golden`` reports the file's real error against Keras and passes within it."""
    meta = {p.key: p.value for p in model.metadata_props}
    tolerances = {o.name: max_error * o.scale for o in outputs}
    meta["edgeattn.quantization"] = json.dumps(
        {
            "mode": mode,
            "max_error": max_error,
            "outputs": {
                o.name: {"max_abs": o.max_abs, "scale": o.scale, "atol": tolerances[o.name]} for o in outputs
            },
        }
    )
    if "edgeattn.golden" in meta:
        golden = json.loads(meta["edgeattn.golden"])
        feed = {k: decode_array(v) for k, v in golden["inputs"].items()}
        names = list(golden["outputs"])
        atols = {}
        for name, got in zip(names, session.run(names, feed)):
            keras = decode_array(golden["outputs"][name])
            error = float(np.max(np.abs(got.astype(np.float64) - keras), initial=0.0))
            atols[name] = max(tolerances.get(name, 0.0), float(golden.get("atol", 0.0)))
            if error > atols[name]:
                raise CheckFailedError(
                    f"on the reference set stored in the model, {mode} output {name!r} is {error:.3g} off Keras's "
                    f"outputs, more than the accepted {atols[name]:.3g} (--max-error {max_error:.2%} of its scale)",
                    hint="nothing was written; fp16 keeps more precision, or raise --max-error if that is acceptable",
                )
        golden["atols"] = atols  # the outputs stay Keras's
        golden["quantized"] = mode
        meta["edgeattn.golden"] = json.dumps(golden)
    del model.metadata_props[:]
    for key, value in meta.items():
        model.metadata_props.add(key=key, value=value)
