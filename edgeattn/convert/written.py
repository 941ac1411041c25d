"""What an export is asked (``ExportOptions``) and what it gives (``ExportResult``), and its last step: the atomic
write of the checked, stamped model (``write``; the ``.ort`` twin compared with the ONNX model first). Shared by
the export of whole-window models (``export``) and of stream models (``streamexport``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from edgeattn.convert import verify
from edgeattn.core import defaults
from edgeattn.core.errors import CheckFailedError
from edgeattn.core.files import write_atomic
from edgeattn.graphs import graph, onnxfile, ortformat

DEFAULT_OPSET = defaults.OPSET


@dataclass(frozen=True)
class ExportOptions:
    opset: int = DEFAULT_OPSET
    # True: the model's one attention layer; a name: that layer (for models with several).
    attention_weights: bool | str = False
    force: bool = False
    unsafe: bool = False
    atol: float = verify.DEFAULT_ATOL
    rtol: float = verify.DEFAULT_RTOL  # times each tensor's scale (its largest |Keras| value), added to atol
    golden: bool = True
    custom_layers: tuple[str, ...] = ()  # the user's layer code: .py files or module names
    input_specs: tuple = ()  # for a model that records no inputs: "x:float32[batch,10,1]" strings
    max_params: int = defaults.MAX_PARAMS  # refuse a config that implies more (before Keras builds it)
    layer_outputs: bool = True  # record which ONNX tensor holds each Keras layer's output (verify per layer)
    streaming: bool = False  # write the step model: one time step and the carried state a run
    max_steps: int = 256  # a step model's attention cache: the most steps attended to


@dataclass
class ExportResult:
    path: Path
    size_bytes: int
    summary: graph.GraphSummary
    parity: verify.ParityReport
    seconds: float
    dropped_nodes: int
    ort_max_abs: float | None = None  # ORT format only: largest difference from the ONNX model
    stream: dict | None = None  # a step or stateful model: its edgeattn.stream entry (states, kind)


def write(
    proto: onnx.ModelProto, out: Path, options: ExportOptions, cases, say, parity, start: float, before: int
) -> ExportResult:
    """Write the checked, stamped model (and, for ``.ort``, its operator config) atomically; ``start``: when the
    export began, ``before``: the node count before the clean-up."""
    data = proto.SerializeToString()
    ort_max_abs = operators = None
    if out.suffix.lower() == ".ort":
        say("saving in ORT format")
        data, operators = ortformat.to_ort(proto, out.stem)
        ort_max_abs = _same_outputs(proto, data, cases)
    write_atomic(out, data, force=options.force)
    if operators is not None:  # after the model: a run killed in between leaves a complete model
        write_atomic(ortformat.config_path(out), operators.encode(), force=options.force)
    return ExportResult(
        path=out,
        size_bytes=len(data),
        summary=graph.summarize(proto),
        parity=parity,
        seconds=time.perf_counter() - start,
        dropped_nodes=before - len(proto.graph.node),
        ort_max_abs=ort_max_abs,
    )


def _same_outputs(proto: onnx.ModelProto, ort_bytes: bytes, cases) -> float:
    """Largest difference between the ONNX model and its ORT-format twin on the parity cases."""
    onnx_session = onnxfile.open_session(proto, ["cpu"])
    ort_session = onnxfile.open_session(ort_bytes, ["cpu"])
    worst = 0.0
    for case in cases:
        for a, b in zip(onnx_session.run(None, case.feed), ort_session.run(None, case.feed)):
            worst = max(worst, float(np.max(np.abs(a.astype(np.float64) - b), initial=0.0)))
    if worst > 1e-6:
        raise CheckFailedError(f"the ORT-format model differs from the ONNX model by {worst:.3g}")
    return worst
