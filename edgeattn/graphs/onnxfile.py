"""ONNX files in: read (contained, external data confined to the model's folder) and opened by onnxruntime.

Below ``verify``, ``sandbox_child``, the commands and ``bench``; sessions get the Predictor's own options
(``edgeattn.runtime.session_options``).
"""

from __future__ import annotations

import contextlib
import os
import shutil

import onnx

from edgeattn.core import sandbox
from edgeattn.core.errors import InputError, UnsafeModelError, require_file
from edgeattn.runtime import check_external_data, private_model_copy

LAYER_OUTPUTS_KEY = "edgeattn.layer_outputs"  # [[Keras layer, ONNX tensor], ...] in the model's order
SOURCE_FORMAT_KEY = "edgeattn.source_format"  # the path the source took at export (loading, tfgraph)
SIGNATURE_OUTPUTS_KEY = "edgeattn.signature_outputs"  # a SavedModel signature's output keys, in ONNX order


def load_onnx(path: str | os.PathLike, contain: bool = True) -> onnx.ModelProto:
    """Read an ONNX file (no external data is followed) or raise InputError / UnsafeModelError.

    With ``contain``, the file is first parsed and opened by onnxruntime in a child process with a time and
    memory limit (``edgeattn.core.sandbox``); its external data must stay inside the model's folder. The file is
    read once: the child parses a private copy of those bytes, and the proto returned is parsed from them.
    """
    return read_onnx(path, contain)[0]


def read_onnx(path: str | os.PathLike, contain: bool = True) -> tuple[onnx.ModelProto, bytes]:
    """``load_onnx``, and the file's bytes as read (and checked) once: write or run those, not the path."""
    path = os.fspath(path)
    if contain and sandbox.enabled():
        with checked_copy(path) as (_, data):
            pass
    else:
        data, _ = _read_checked(path)
    try:
        model = onnx.ModelProto.FromString(data)
    except Exception as exc:  # protobuf DecodeError and friends
        raise InputError(f"{path} is not an ONNX model ({type(exc).__name__})") from None
    if not model.graph.node and not model.graph.output:
        raise InputError(f"{path} holds no ONNX graph (an empty file, or not ONNX)")
    return model, data


def _read_checked(path: str, ort_format: bool = False) -> tuple[bytes, list[str]]:
    """The file's bytes, read once, and its external data locations, checked (InputError / UnsafeModelError).
    A file holding the key "location" is parsed here (protobuf only) to find them."""
    require_file(path, "an ONNX model")
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({exc.strerror})") from None
    if data[4:8] == b"ORTM" and not ort_format:
        raise InputError(
            f"{path} is in onnxruntime's ORT format, not ONNX",
            hint="predict and verify --golden run it; inspect, bench and verify --keras need the .onnx",
        )
    try:
        return data, check_external_data(path, data=data)
    except ValueError as exc:
        raise _refusal(exc) from None


def _refusal(exc: ValueError):
    if "external data" not in str(exc):
        return InputError(str(exc))
    return UnsafeModelError(str(exc), hint="keep the model and its data files together in one folder")


@contextlib.contextmanager
def checked_copy(path: str | os.PathLike, ort_format: bool = False):
    """Read an ONNX file once and yield ``(copy, data)``: ``data`` its bytes, ``copy`` a private copy of them
    (beside a private copy of its external data, whose locations were checked first) that the contained child
    (``edgeattn.core.sandbox``, unless EDGEATTN_CONTAIN=0) has parsed and opened. What was checked is what is built:
    build from ``data`` or ``copy``, never from ``path`` again. ``ort_format``: accept onnxruntime's ORT format."""
    path = os.fspath(path)
    data, locations = _read_checked(path, ort_format)
    try:
        private = private_model_copy(path, data, locations)
    except ValueError as exc:
        raise _refusal(exc) from None
    try:
        copy = os.path.join(private, os.path.basename(path))
        if sandbox.enabled():
            sandbox.parse("onnx", copy, shown=path)
        yield copy, data
    finally:
        shutil.rmtree(private, ignore_errors=True)


def open_session(
    model: onnx.ModelProto | bytes | str | os.PathLike,
    providers=None,
    threads: int | None = None,
    fold_weights: bool = True,
    fuse_for_runtime: bool = True,
):
    """An onnxruntime session on the model (a proto, bytes, or a file), built as the Predictor builds its own
    (``edgeattn.runtime``: sequential, ``threads`` intra-op threads, quantized weights folded in memory unless
    ``fold_weights`` is False, onnxruntime's fused kernels in memory unless ``fuse_for_runtime`` is False)."""
    from edgeattn.runtime import make_session, resolve_providers, session_options

    options = session_options(threads, fold_weights, fuse_for_runtime)
    if isinstance(model, onnx.ModelProto):
        source = model.SerializeToString()
    elif isinstance(model, bytes):
        source = model
    else:  # a file: its bytes (rewritten like any), unless it points to external data beside it
        with open(model, "rb") as fh:
            source = fh.read()
        source = os.fspath(model) if b"location" in source else source
    return make_session(source, options, resolve_providers(providers), fuse_for_runtime)


def tensor_values(model: onnx.ModelProto, names, feeds: list[dict]) -> list[dict]:
    """For each feed, the values of the named tensors of ``model`` (graph inputs too), by name: the graph is
    run once per feed with them as extra outputs."""
    from edgeattn.graphs.graph import with_outputs

    session = open_session(with_outputs(model, names, keep=False), ["cpu"], threads=1, fuse_for_runtime=False)
    output_names = [o.name for o in session.get_outputs()]
    return [{**dict(zip(output_names, session.run(None, feed))), **feed} for feed in feeds]


def output_difference(first: onnx.ModelProto, second: onnx.ModelProto, feeds: list[dict]) -> float:
    """The largest absolute difference between the outputs of two models over ``feeds`` (NaN where both give
    NaN counts as equal; ``inf`` where a shape differs or only one gives NaN): how a graph rewrite shows that it
    changed nothing but the speed."""
    import numpy as np

    a, b = (open_session(m, ["cpu"], threads=1, fuse_for_runtime=False) for m in (first, second))
    worst = 0.0
    for feed in feeds:
        for x, y in zip(a.run(None, feed), b.run(None, feed)):
            if x.shape != y.shape:
                return float("inf")
            x, y = x.astype(np.float64), y.astype(np.float64)
            diff = np.where(np.isnan(x) & np.isnan(y), 0.0, np.abs(x - y))
            worst = max(worst, float(np.max(np.nan_to_num(diff, nan=np.inf), initial=0.0)))
    return worst


def take_if_same(model: onnx.ModelProto, rewritten: onnx.ModelProto, feeds: list[dict], atol: float) -> bool:
    """Let ``model`` become ``rewritten`` (its dead nodes pruned) if their outputs on ``feeds`` differ by at most
    ``atol`` (``output_difference``); returns whether it did. How each graph rewrite keeps only what is right."""
    from edgeattn.graphs.graph import prune_dead

    prune_dead(rewritten)
    if output_difference(model, rewritten, feeds) > atol:
        return False
    model.CopyFrom(rewritten)
    return True


def describe(path: str | os.PathLike) -> dict:
    """What ``edgeattn inspect`` shows of an ONNX file: size, opset, nodes, inputs/outputs, operators,
    initializers (largest first), external data and the ``edgeattn.*`` metadata (without the reference set)."""
    from edgeattn.graphs import graph
    from edgeattn.runtime import GOLDEN_KEY, METADATA_PREFIX, external_locations

    proto, data = read_onnx(path)
    s = graph.summarize(proto)
    meta = {p.key: p.value for p in proto.metadata_props if p.key.startswith(METADATA_PREFIX)}
    meta.pop(GOLDEN_KEY, None)
    return {
        "file": os.fspath(path),
        "size_bytes": len(data),
        "opset": s.opset,
        "domains": list(s.domains),
        "nodes": s.nodes,
        "parameters": s.parameters,
        "inputs": [{"name": n, "shape": list(sh), "dtype": d} for n, sh, d in s.inputs],
        "outputs": [{"name": n, "shape": list(sh), "dtype": d} for n, sh, d in s.outputs],
        "op_histogram": s.op_histogram,
        "external_data": external_locations(proto),
        "initializers": [
            {"name": t.name, "shape": list(t.dims), "bytes": t.ByteSize()}
            for t in sorted(proto.graph.initializer, key=lambda t: -t.ByteSize())
        ],
        "metadata": meta,
    }
