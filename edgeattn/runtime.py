"""The predictor that applications embed: numpy and onnxruntime, nothing else.

This file is self-contained on purpose: it imports nothing from the rest of edgeattn, never TensorFlow or
Keras, and can be copied into an application as it is.

    from edgeattn.runtime import Predictor

    predictor = Predictor("models/seed.onnx")          # best available provider, CPU last
    y = predictor.predict(x)                           # x: (batch, time, features)
    y, weights = predictor.predict(x, return_attention=True)   # exported with --attention-weights

Errors: ``FileNotFoundError`` for a missing model, ``ValueError`` for a file that is not a usable model or an
input of the wrong shape or with NaN/inf, ``TypeError`` for an input of the wrong kind (strings, objects).
"""

from __future__ import annotations

import base64
import importlib
import io
import json
import logging
import math
import os
import shutil
import sys
import threading
from dataclasses import dataclass
from typing import Literal, overload

import numpy as np
import onnxruntime as ort

log = logging.getLogger("edgeattn.runtime")

ATTENTION_OUTPUT = "attention_weights"
METADATA_PREFIX = "edgeattn."
GOLDEN_KEY = "edgeattn.golden"
TEXT_KEY = "edgeattn.text"  # a text model's tokenizer rules (JSON; see tokenizer.py)
STREAM_KEY = "edgeattn.stream"  # a stream model's data inputs and carried states (JSON; see stream.py)
# When a golden set records no tolerance; equals edgeattn.core.defaults.ATOL (this file imports nothing).
GOLDEN_ATOL = 1e-4

# Short names accepted in ``providers``, mapped to onnxruntime's names.
PROVIDER_NAMES = {
    "cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider", "coreml": "CoreMLExecutionProvider", "directml": "DmlExecutionProvider",
    "dml": "DmlExecutionProvider", "openvino": "OpenVINOExecutionProvider", "rocm": "ROCMExecutionProvider",
    "migraphx": "MIGraphXExecutionProvider", "nnapi": "NnapiExecutionProvider", "qnn": "QNNExecutionProvider",
    "xnnpack": "XnnpackExecutionProvider", "webgpu": "WebGpuExecutionProvider",
}  # fmt: skip
# Default preference when ``providers`` is None: the fastest that this onnxruntime build has, CPU last.
DEFAULT_PREFERENCE = ("tensorrt", "cuda", "rocm", "migraphx", "coreml", "directml", "cpu")

_ORT_DTYPES = {
    "tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16,
    "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int16)": np.int16, "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8, "tensor(bool)": np.bool_,
}  # fmt: skip


@dataclass(frozen=True)
class TensorSpec:
    """An input or output of the model: ``shape`` holds ints for fixed axes and names for free ones."""

    name: str
    shape: tuple
    dtype: np.dtype

    def __str__(self) -> str:
        return f"{self.name}: {_shape(self.shape)} {self.dtype.name}"


def _both_wheels_hint() -> str:
    """When both the onnxruntime and onnxruntime-gpu wheels are installed, the one installed last owns the
    shared ``onnxruntime`` module: say how to give it to the GPU build."""
    from importlib import metadata

    try:
        all(metadata.version(dist) for dist in ("onnxruntime", "onnxruntime-gpu"))
    except metadata.PackageNotFoundError:
        return ""
    return (
        ". Both the onnxruntime and onnxruntime-gpu wheels are installed and share one module; give it to the "
        "GPU build: pip install --force-reinstall --no-deps onnxruntime-gpu"
    )


def resolve_providers(providers=None) -> list[str]:
    """onnxruntime provider names, in order, for the short or full names given; unknown ones are skipped."""
    available = ort.get_available_providers()
    wanted = [providers] if isinstance(providers, str) else providers
    chosen, skipped = [], []
    for name in DEFAULT_PREFERENCE if providers is None else wanted:
        full = PROVIDER_NAMES.get(str(name).lower(), str(name))
        if full not in available:
            skipped += [] if providers is None else [str(name)]
        elif full not in chosen:
            chosen.append(full)
    if skipped:  # one warning for all of them
        names, hint = ", ".join(map(repr, skipped)), _both_wheels_hint()
        why = f"not available in this onnxruntime {ort.__version__} build (it has {', '.join(available)})"
        log.warning("execution provider(s) %s %s; skipped%s", names, why, hint)
    return chosen or ["CPUExecutionProvider"]


def _spec(node) -> TensorSpec:
    shape = tuple(d if isinstance(d, int) else (d or "?") for d in (node.shape or ()))
    return TensorSpec(node.name, shape, np.dtype(_ORT_DTYPES.get(node.type, np.float32)))


def is_ort_format(path: str | os.PathLike) -> bool:
    """Whether the file is in onnxruntime's ORT format (a flatbuffer with the identifier ``ORTM``)."""
    with open(path, "rb") as fh:
        return fh.read(8)[4:8] == b"ORTM"


def check_external_data(path: str | os.PathLike, model=None, data: bytes | None = None) -> list[str]:
    """Refuse (``ValueError``) an ONNX file whose external data could resolve outside its own folder.
    Every tensor stored outside the file must name a relative path with no ``..``, inside the model's folder,
    that is a regular file reached through no symbolic link and with no second hard link. Checked before
    onnxruntime or onnx follows anything. Returns the locations (relative), empty for a self-contained file.
    ``data``: the file's bytes as already read (else the file is read). Bytes without the protobuf key
    ``location`` hold no external data and are not parsed here (cheap)."""
    path = os.fspath(path)
    if model is None:
        if data is None:
            with open(path, "rb") as fh:
                data = fh.read()
        if data[4:8] == b"ORTM" or data.find(b"location") < 0:
            return []  # ORT format has no external data; without the key no tensor points outside
        import onnx  # only for files that may point outside themselves

        try:
            model = onnx.ModelProto.FromString(data)
        except Exception as exc:  # protobuf's DecodeError and friends
            raise ValueError(f"{path} is not an ONNX model ({type(exc).__name__})") from None
    folder = os.path.realpath(os.path.dirname(os.path.abspath(path)))
    locations = external_locations(model)
    for location in locations:
        if problem := _outside(folder, location):
            raise ValueError(f"{path}: external data {location!r} {problem}; refused before reading it")
    return locations


def private_model_copy(path: str | os.PathLike, data: bytes, locations) -> str:
    """A fresh folder only this user can read: ``data`` (the model's bytes, as checked) under the model's name, and
    each external data file (its location checked by ``check_external_data``) opened without following a link,
    refused unless still a regular file with one link, and copied. onnxruntime builds from it; the caller removes it."""
    import stat
    import tempfile

    path = os.fspath(path)
    folder = os.path.realpath(os.path.dirname(os.path.abspath(path)))
    private = tempfile.mkdtemp(prefix="edgeattn-model-")
    try:
        with open(os.path.join(private, os.path.basename(path)), "xb") as fh:
            fh.write(data)
        for location in locations:
            target = os.path.join(private, *location.replace("\\", "/").split("/"))
            os.makedirs(os.path.dirname(target), exist_ok=True)
            fd = os.open(os.path.join(folder, location), os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
            with open(fd, "rb") as src, open(target, "xb") as dst:  # a link now is refused (ELOOP)
                st = os.fstat(src.fileno())
                if not stat.S_ISREG(st.st_mode) or st.st_nlink > 1:
                    raise OSError("it changed after its check")
                shutil.copyfileobj(src, dst)
    except OSError as exc:
        shutil.rmtree(private, ignore_errors=True)
        raise ValueError(f"{path}: external data cannot be read safely ({exc.strerror or exc})") from None
    return private


def external_locations(model) -> list[str]:
    """The ``location`` of every tensor an ONNX model stores outside its file (initializers, sparse
    initializers, node attributes, subgraphs), read from the proto: nothing is opened."""
    return sorted(set(_locations(model.graph)))


def _locations(graph):
    tensors = list(graph.initializer) + [s.values for s in graph.sparse_initializer]
    for node in graph.node:
        for attr in node.attribute:
            tensors += [*([attr.t] if attr.HasField("t") else []), *attr.tensors]
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                yield from _locations(sub)
    for tensor in tensors:
        if tensor.data_location == 1:  # TensorProto.EXTERNAL
            yield {e.key: e.value for e in tensor.external_data}.get("location", "")


def _outside(folder: str, location: str) -> str | None:
    """Why ``location`` (relative to ``folder``) is not safe to read, or None."""
    if not location or "\x00" in location:
        return "is empty or malformed"
    if os.path.isabs(location) or location.startswith(("/", "\\")) or ":" in location.split("/")[0]:
        return "is an absolute path"
    parts = location.replace("\\", "/").split("/")
    if ".." in parts:
        return "climbs out of the model's folder (..)"
    current = folder
    for part in parts:
        current = os.path.join(current, part)
        if os.path.islink(current):
            return "goes through a symbolic link"
    if not os.path.realpath(current).startswith(folder + os.sep):
        return "resolves outside the model's folder"
    if not os.path.isfile(current):
        return "is missing (or not a regular file)"
    if os.stat(current).st_nlink > 1:
        return "has more than one hard link (it may be a file from elsewhere)"
    return None


def _finite(x: np.ndarray) -> bool:
    """True only if every value of float array x is finite (x.x is finite; cheaper than testing each value).
    A False may also mean that x.x overflowed: callers then run the exact check."""
    v = x.reshape(-1)
    return math.isfinite(v.dot(v))


_NO_LANES: dict = {}
# Inputs up to this size are copied and checked as bytes, without numpy (see _filler); larger ones, whose runs
# take long enough that numpy's cost no longer shows, as arrays (the byte check costs ~1.7 us per KiB).
SMALL_INPUT_BYTES = 4096
# Per float width: the exponent bits, the exponent's lowest bit, the sign bit.
_FLOAT_BITS = {2: (0x7C00, 0x0400, 0x8000), 4: (0x7F800000, 0x00800000, 0x80000000),
               8: (0x7FF << 52, 1 << 52, 1 << 63)}  # fmt: skip


def _filler(buffer: np.ndarray, check: bool):
    """``fill(x)``: copies x (of the buffer's shape) into the bound ``buffer`` and returns True, or returns False
    and copies nothing when x is not of the buffer's dtype or, with ``check``, holds a NaN or an infinity.
    A small float input is copied and checked as bytes, in one pass of integer arithmetic: a float is NaN or
    infinite when its exponent bits are all ones; masked to those bits, such a lane is the largest value a lane
    can hold below the sign bit, so adding the exponent's lowest bit carries into the sign bit in exactly those
    lanes (and never into the next lane). That is exact, and runs no numpy code between two runs, which on a
    small model costs more than the check itself (it evicts onnxruntime's code from the CPU's caches)."""
    dtype = buffer.dtype
    if buffer.nbytes > SMALL_INPUT_BYTES or not buffer.size:  # (an empty buffer has no bytes to view)

        def fill_array(x) -> bool:
            if x.dtype is not dtype or (check and not (_finite(x) or np.isfinite(x).all())):
                return False
            buffer[...] = x
            return True

        return fill_array
    view = memoryview(buffer).cast("B")
    bits = _FLOAT_BITS.get(dtype.itemsize) if check and dtype.kind == "f" else None
    if bits is None:

        def fill_bytes(x) -> bool:
            if x.dtype is not dtype:
                return False
            view[:] = x.tobytes()
            return True

        return fill_bytes
    unsigned = np.dtype(f"u{dtype.itemsize}")
    exponent, low, sign = (
        int.from_bytes(np.full(buffer.size, b, unsigned).tobytes(), sys.byteorder) for b in bits
    )
    order = sys.byteorder

    def fill_checked_bytes(x) -> bool:
        if x.dtype is not dtype:
            return False
        data = x.tobytes()
        if ((int.from_bytes(data, order) & exponent) + low) & sign:
            return False
        view[:] = data
        return True

    return fill_checked_bytes


def _bound_runner(session: ort.InferenceSession, binding) -> tuple:
    """(run, arg) such that ``run(arg, None)`` runs ``session`` on ``binding``: onnxruntime's C++ entry where
    the build has it (a CPU session needs none of the checks the Python wrapper adds for GPU graph capture,
    and a small model notices each Python frame), else the public method."""
    raw = getattr(getattr(session, "_sess", None), "run_with_iobinding", None)
    inner = getattr(binding, "_iobinding", None)
    return (session.run_with_iobinding, binding) if raw is None or inner is None else (raw, inner)


def encode_array(array: np.ndarray) -> str:
    """An array as base64 ``.npy`` text (how reference inputs and outputs are stored in metadata)."""
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def decode_array(blob: str) -> np.ndarray:
    return np.load(io.BytesIO(base64.b64decode(blob)), allow_pickle=False)


def _binds_buffers(session) -> bool:
    """Whether this onnxruntime can bind caller-owned buffers and run a binding (checked once per session)."""
    try:
        binding = session.io_binding()
    except Exception:  # onnxruntime's own exception types, or no io_binding at all
        return False
    names = ("bind_input", "bind_output")
    return all(hasattr(binding, n) for n in names) and hasattr(session, "run_with_iobinding")


# onnxruntime's session config key that lets its constant folding fold DequantizeLinear on constant weights.
FOLD_QDQ_WEIGHTS = "session.disable_quant_qdq"
# onnxruntime CPU fusions measured slower than the ops they replace at batch 256, one thread, edge fixtures:
# SkipLayerNormalization 9-18% (at most 5% faster at batch 1), BiasGelu 1-6% (Gelu alone: 4-8% faster).
SLOWER_FUSIONS = ["BiasGeluFusion", "SkipLayerNormFusion"]
# A node's op_type as protobuf writes it: what for_runtime fuses sits in transformers, which hold an Erf (GELU),
# a Split (a packed attention) or a LayerNormalization; a model with none of them does not even import onnx.
_FUSION_MARKERS = (b"\x22\x03Erf", b"\x22\x05Split", b"\x22\x12LayerNormalization")


def session_options(threads: int | None = None, fold_weights: bool = True,
                    fuse_for_runtime: bool = True) -> ort.SessionOptions:  # fmt: skip
    """Session options as edgeattn runs models: quiet, sequential, one inter-op thread, ``threads`` intra-op
    threads (default: onnxruntime's choice).

    ``fold_weights``: onnxruntime folds constant weight paths (``Cast`` of fp16 weights, ``DequantizeLinear``
    of int8 weights) into float initializers in memory when it builds the session, so a small int8 or fp16
    file runs as fast as the float model while the file stays small. False keeps the stored graph, for
    execution providers with real int8 kernels. ``fuse_for_runtime``: all of onnxruntime's graph rewrites
    (its own fused kernels too); False: the basic ones only (standard ops; constants, weights too, still folded).
    """
    options = ort.SessionOptions()
    options.log_severity_level, options.inter_op_num_threads = 3, 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        options.intra_op_num_threads = int(threads)
    if fold_weights:
        options.add_session_config_entry(FOLD_QDQ_WEIGHTS, "1")
    if not fuse_for_runtime:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    return options


def for_runtime(data: bytes) -> bytes:
    """The model's bytes with onnxruntime's CPU kernels in place of standard subgraphs, in memory only
    (``edgeattn.graphs.ortfusion``: one ``Attention`` kernel per packed self-attention, each Dense over a
    sequence as one Gemm with its bias and activation, GELU in the form onnxruntime fuses). ``data`` itself when nothing applies, for ``.ort`` bytes, or when ``edgeattn.graphs.ortfusion`` or
    ``onnx``, which it needs, is missing (a copy of this file alone runs the stored graph)."""
    if data[4:8] == b"ORTM" or not any(marker in data for marker in _FUSION_MARKERS):
        return data  # nothing to fuse: onnx is not even imported
    try:
        from edgeattn.graphs import ortfusion
    except ImportError:
        return data
    return ortfusion.for_cpu(data)


def make_session(source, options, providers: list[str], fuse_for_runtime: bool) -> ort.InferenceSession:
    """An InferenceSession on ``source`` (bytes or a path), fused as ``Predictor`` says for a CPU-only session."""
    fuse = fuse_for_runtime and providers == ["CPUExecutionProvider"]
    extra = {"disabled_optimizers": SLOWER_FUSIONS} if fuse else {}
    fused = for_runtime(source) if fuse and isinstance(source, bytes) else source
    try:
        return ort.InferenceSession(fused, options, providers=providers, **extra)
    except (
        Exception
    ):  # onnxruntime's own kinds; a rewrite it refuses must not cost the model: run it as stored
        if fused is source:
            raise
    return ort.InferenceSession(source, options, providers=providers, **extra)


class Predictor:
    """Runs an edgeattn ONNX model with onnxruntime.

    Args:
        path: the ``.onnx`` (or ``.ort``) file.
        providers: execution providers in order of preference, short names ("cuda", "tensorrt", "coreml",
            "cpu", ...) or onnxruntime's full names. Providers this build lacks are skipped with a warning.
            Default: the best available, CPU last. ``predictor.providers`` tells what is in effect.
        threads: intra-op threads (default: onnxruntime's choice).
        batch_size: inputs with more samples than this run in chunks of this size (bounded memory).
        allow_nonfinite: let NaN and infinite inputs through instead of raising ``ValueError``.
        io_binding: run through IOBindings bound once to numpy buffers (faster per call on CPU). Default: where
            this onnxruntime supports it, which is detected once at load; False takes plain ``session.run``.
        fold_weights: fold the int8/fp16 weights of a quantized file into float weights in memory at load
            (as fast as the float model; the memory of the float model). False keeps the stored graph, for
            runtimes with real int8 kernels. No effect on float files.
        fuse_for_runtime: let onnxruntime put its own fused kernels (FusedMatMul, Gelu, NCHWc Conv, ...) in place
            of standard subgraphs, in memory (the file stays standard; on CPU alone, GELUs first rewritten for
            its fusion by ``for_runtime`` and ``SLOWER_FUSIONS`` off). False runs the stored graph: standard
            ops only (onnxruntime's basic rewrites, which still fold constants and weights).
        profile_prefix: onnxruntime profiles every run, per kernel, into a JSON file whose path starts with
            this (``SessionOptions.enable_profiling``); ``end_profiling()`` ends it and returns the path.
    """

    def __init__(self, path: str | os.PathLike, providers=None, threads: int | None = None,
                 batch_size: int | None = None, allow_nonfinite: bool = False, io_binding: bool | None = None,
                 fold_weights: bool = True, fuse_for_runtime: bool = True,
                 profile_prefix: str | None = None) -> None:  # fmt: skip
        self.path = os.fspath(path)
        if not os.path.isfile(self.path):
            raise FileNotFoundError(f"model not found: {self.path}")
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        with open(self.path, "rb") as fh:  # read once: the bytes checked are the bytes onnxruntime builds
            data = fh.read()
        locations = check_external_data(self.path, data=data)  # external data: from a private copy of it
        chosen = resolve_providers(providers)
        private = private_model_copy(self.path, data, locations) if locations else None
        options = session_options(threads, fold_weights, fuse_for_runtime)
        if profile_prefix:
            options.enable_profiling, options.profile_file_prefix = True, os.fspath(profile_prefix)
        self.fold_weights, self.fuse_for_runtime = fold_weights, fuse_for_runtime
        try:
            source = os.path.join(private, os.path.basename(self.path)) if private else data
            self._session = make_session(source, options, chosen, fuse_for_runtime)
        except Exception as exc:  # onnxruntime raises its own, unrelated exception types
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ValueError(f"{self.path} is not a model onnxruntime can load: {first}") from exc
        finally:
            if private:
                shutil.rmtree(private, ignore_errors=True)
        self.batch_size, self._allow_nonfinite = batch_size, allow_nonfinite
        self.inputs = tuple(_spec(i) for i in self._session.get_inputs())
        self.outputs = tuple(_spec(o) for o in self._session.get_outputs())
        self.providers = tuple(self._session.get_providers())
        meta = self._session.get_modelmeta().custom_metadata_map
        self.metadata = {k: v for k, v in meta.items() if k.startswith(METADATA_PREFIX) and k != GOLDEN_KEY}
        self._golden = meta.get(GOLDEN_KEY)
        self._stream = _sibling("stream").StreamSpec.read(self) if STREAM_KEY in self.metadata else None
        self._output_names = [o.name for o in self.outputs]
        # Hot path: per input, the fixed axes to check; per thread, IOBindings with buffers allocated once.
        ins = self.inputs
        self._fixed = {s.name: tuple((a, d) for a, d in enumerate(s.shape) if type(d) is int) for s in ins}
        self._tails = {s.name: s.shape[1:] if all(type(d) is int for d in s.shape[1:]) else None for s in ins}
        self._local = threading.local()
        self._bind = self.providers == ("CPUExecutionProvider",) and (
            _binds_buffers(self._session) if io_binding is None else bool(io_binding)
        )
        # The fast lane of predict(): one input, CPU, no chunking; shapes already bound are already checked.
        self._single = self._bind and len(self.inputs) == 1 and batch_size is None
        self._name0 = self.inputs[0].name if self.inputs else None
        self._attention_index = self._output_names.index(ATTENTION_OUTPUT) if self.has_attention else None

    @property
    def allow_nonfinite(self) -> bool:
        """Whether NaN and infinite inputs are let through (set when the Predictor is made)."""
        return self._allow_nonfinite

    @property
    def io_binding(self) -> bool:
        """Whether runs go through pre-bound IOBinding buffers (else plain ``session.run``)."""
        return self._bind

    @property
    def has_attention(self) -> bool:
        """Whether the model was exported with an ``attention_weights`` output."""
        return ATTENTION_OUTPUT in (o.name for o in self.outputs)

    def end_profiling(self) -> str:
        """End the profile asked for with ``profile_prefix``; the path of its JSON file (empty: none was asked)."""
        return self._session.end_profiling()

    def __repr__(self) -> str:
        ins, outs = (", ".join(map(str, specs)) for specs in (self.inputs, self.outputs))
        return f"Predictor({self.path!r}, providers={list(self.providers)}, inputs=[{ins}], outputs=[{outs}])"

    # -- input checks -------------------------------------------------------------------------------------

    def _check(self, spec: TensorSpec, x) -> np.ndarray:
        # Fast path: an array of the right dtype, rank and fixed axes, and finite; anything else falls through
        # to the exact checks below, which explain what is wrong.
        if type(x) is np.ndarray and x.dtype == spec.dtype and x.ndim == len(spec.shape):
            tail = self._tails[spec.name]
            if (
                x.shape[1:] == tail
                if tail is not None
                else all(x.shape[a] == d for a, d in self._fixed[spec.name])
            ) and (x.dtype.kind != "f" or self._allow_nonfinite or _finite(x)):
                return x
        name, shape = f"input {spec.name!r}", _shape(spec.shape)
        if isinstance(x, (str, bytes)):
            raise TypeError(f"{name} must be numbers of shape {shape}, got a string")
        try:
            arr = np.asarray(x)
        except ValueError as exc:  # ragged nested lists
            raise ValueError(f"{name}: nested lists of unequal lengths ({exc})") from None
        if (kind := arr.dtype.kind) not in "fiub":
            raise TypeError(f"{name} must be numbers ({spec.dtype.name}), got an array of dtype {arr.dtype}")
        if arr.ndim != len(spec.shape):
            got = f"got shape {arr.shape} (rank {arr.ndim})"
            raise ValueError(f"{name} must have shape {shape} (rank {len(spec.shape)}), {got}")
        for axis, (want, got) in enumerate(zip(spec.shape, arr.shape)):
            if isinstance(want, int) and want != got:
                where = f"(axis {axis} is {got}, expected {want})"
                raise ValueError(f"{name} must have shape {shape}, got {arr.shape} {where}")
        if spec.dtype.kind in "iu":
            if kind == "f" and not (np.isfinite(arr).all() and np.all(arr == np.round(arr))):
                raise TypeError(f"{name} takes integer token ids, got non-integer values")
        elif kind == "f" and not self._allow_nonfinite and not np.isfinite(arr).all():
            bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
            tip = "pass allow_nonfinite=True to run them anyway"
            raise ValueError(f"{name} holds {bad} NaN or infinite value(s); {tip}")
        return arr.astype(spec.dtype, copy=False)

    def _feed(self, x) -> dict:
        if self._stream is not None:  # a stream model: the states not given start at zeros (stream.py)
            x = self._stream.complete(x)
        if isinstance(x, dict):
            missing = [s.name for s in self.inputs if s.name not in x]
            if missing:
                raise ValueError(f"missing input(s): {', '.join(missing)}")
            return {s.name: self._check(s, x[s.name]) for s in self.inputs}
        if len(self.inputs) != 1:
            names = ", ".join(s.name for s in self.inputs)
            raise ValueError(f"this model has {len(self.inputs)} inputs ({names}); pass a dict of arrays")
        return {self.inputs[0].name: self._check(self.inputs[0], x)}

    # -- running ------------------------------------------------------------------------------------------

    def run(self, x) -> list[np.ndarray]:
        """All outputs of the model, in the model's order, for a checked input."""
        return self._run(x)

    def _run(self, x) -> list[np.ndarray]:
        """The outputs for a checked input: in chunks, through a pre-bound IOBinding, or a plain run."""
        feed = self._feed(x)
        if self.batch_size is not None:
            n = next(iter(feed.values())).shape[0]
            if n > (size := self.batch_size):
                chunks = [{k: v[i : i + size] for k, v in feed.items()} for i in range(0, n, size)]
                parts = [self._session.run(self._output_names, chunk) for chunk in chunks]
                return [np.concatenate([p[j] for p in parts]) for j in range(len(self._output_names))]
        if self._bind:
            return self._run_bound(feed)
        return self._session.run(self._output_names, feed)

    def _run_bound(self, feed: dict) -> list[np.ndarray]:
        """One run through an IOBinding whose input and output buffers were bound once for this shape.
        Binding anew on each call costs about what it saves; copying into a pre-bound buffer does not.
        Bindings are per thread (a binding is not shareable) and kept for at most 8 shapes per thread. Returns
        copies: the buffers are overwritten by the next call."""
        key = tuple([v.shape for v in feed.values()])
        cache = getattr(self._local, "bound", None)
        if cache is None:
            cache = self._local.bound = {}
            self._local.lanes = {}
        bound = cache.get(key)
        if bound is None:
            outputs = self._session.run(self._output_names, feed)  # also tells the output shapes
            if len(cache) >= 8:
                cache.clear()
                self._local.lanes.clear()
            binding = self._session.io_binding()
            inputs = {name: np.empty_like(value, order="C") for name, value in feed.items()}
            results = [np.empty_like(o, order="C") for o in outputs]
            try:
                for name, buf in inputs.items():
                    binding.bind_input(name, "cpu", 0, buf.dtype, list(buf.shape), buf.ctypes.data)
                for name, buf in zip(self._output_names, results):
                    binding.bind_output(name, "cpu", 0, buf.dtype, list(buf.shape), buf.ctypes.data)
            except (TypeError, RuntimeError) as exc:  # a build whose binding takes other arguments
                why = "onnxruntime %s cannot bind numpy buffers (%s); using session.run"
                log.warning(why, ort.__version__, exc)
                self._bind = self._single = False
                return outputs
            # Per input, the function that checks a value and copies it into its buffer (the buffers live as
            # long as these functions).
            check = not self._allow_nonfinite
            fills = {name: _filler(buf, check and buf.dtype.kind == "f") for name, buf in inputs.items()}
            run, arg = _bound_runner(self._session, binding)  # run(arg, None) runs the binding
            cache[key] = (fills, run, arg, results)
            if self._single:  # predict()'s lane for this shape
                self._local.lanes[key[0]] = (fills[self._name0], run, arg, results)
            return outputs
        fills, run, arg, results = bound
        if not all(fill(feed[name]) for name, fill in fills.items()):
            # the feed is checked already: only a dtype object other than the buffer's one gets here
            return self._session.run(self._output_names, feed)
        run(arg, None)
        return [r.copy() for r in results]

    @overload
    def predict(self, x, return_attention: Literal[False] = False) -> np.ndarray: ...

    @overload
    def predict(self, x, return_attention: Literal[True]) -> tuple[np.ndarray, np.ndarray]: ...

    def predict(self, x, return_attention: bool = False):
        """The prediction (the model's first output); with ``return_attention``, ``(prediction, weights)``."""
        if return_attention and self._attention_index is None:
            raise ValueError(
                f"{os.path.basename(self.path)} has no {ATTENTION_OUTPUT!r} output; "
                "export it with `edgeattn export --attention-weights`"
            )
        lane = None
        if type(x) is np.ndarray:  # the common call: no numpy, little Python
            lane = getattr(self._local, "lanes", _NO_LANES).get(x.shape)
            if lane is not None and not lane[0](x):
                lane = None
        elif type(x) is dict:
            lane = self._dict_lane(x)
        if lane is not None:  # (fill, run, its argument, output buffers); the inputs are in
            lane[1](lane[2], None)
            results = lane[3]
            if return_attention:
                return results[0].copy(), results[self._attention_index].copy()
            return results[0].copy()
        outputs = self._run(x)
        if return_attention:
            return outputs[0], outputs[self._attention_index]
        return outputs[0]

    def _dict_lane(self, x: dict):
        """For a dict of arrays (one per input, each of its input's dtype) whose shapes are bound and which are
        finite: the bound (fills, run, its argument, output buffers), the inputs already copied in; else None
        (the general path checks and explains)."""
        if not self._bind or self.batch_size is not None or len(x) != len(self.inputs):
            return None
        arrays = [x.get(spec.name) for spec in self.inputs]
        if any(type(a) is not np.ndarray for a in arrays):
            return None
        cache = getattr(self._local, "bound", None)
        bound = cache.get(tuple([a.shape for a in arrays])) if cache else None
        if bound is None:
            return None
        return bound if all(bound[0][spec.name](a) for spec, a in zip(self.inputs, arrays)) else None

    __call__ = predict

    def stream(self):
        """A ``stream.Stream`` on a stream model: ``push`` a step (or chunk) at a time, the states carried."""
        return _sibling("stream").Stream(self)

    def window(self, steps: int | None = None):
        """A ``stream.Window`` on a whole-window model: ``push`` a step, predict on the last ``steps`` steps."""
        return _sibling("stream").Window(self, steps)

    def predict_text(self, texts, return_attention: bool = False):
        """``predict`` for a list of strings: a text model (exported from Keras's ``TextVectorization``) tokenizes
        them as Keras did, in pure Python, by the rules stored in the file (``edgeattn.text``, tokenizer.py)."""
        return self.predict(self.tokenize(texts), return_attention)

    def tokenize(self, texts) -> np.ndarray:
        """A text model's token ids for a list of strings: the input ``predict_text`` runs (``run`` takes it)."""
        if getattr(self, "_tokenizer", None) is None:
            if TEXT_KEY not in self.metadata:
                raise ValueError(f"{os.path.basename(self.path)} is not a text model (it has no {TEXT_KEY})")
            self._tokenizer = _sibling("tokenizer").Tokenizer.from_json(self.metadata[TEXT_KEY])
        ids = self._tokenizer(texts)
        if not ids:
            raise ValueError("no texts given")
        return np.array(ids, self.inputs[0].dtype).reshape(len(ids), -1)

    # -- on-device check ----------------------------------------------------------------------------------

    def self_check(self) -> dict:
        """Re-run the reference inputs stored in the model at export time and compare with Keras's outputs:
        ``{"passed": bool, "outputs": {name: {"max_abs": float, "atol": float}}}``; ``ValueError`` when the
        model carries no reference set."""
        if not self._golden:
            raise ValueError(f"{os.path.basename(self.path)} carries no reference outputs ({GOLDEN_KEY})")
        return check_golden(self, json.loads(self._golden))


def check_golden(predictor: Predictor, golden: dict) -> dict:
    """Compare ``predictor``'s outputs on a reference set (as stored by ``edgeattn export``)."""
    inputs = {name: decode_array(blob) for name, blob in golden["inputs"].items()}
    atol, rtol = float(golden.get("atol", GOLDEN_ATOL)), float(golden.get("rtol", 0.0))
    feed = inputs if len(inputs) > 1 else next(iter(inputs.values()))
    got = dict(zip(predictor._output_names, predictor.run(feed)))
    result = {"passed": True, "outputs": {}}
    for name, blob in golden["outputs"].items():
        expected = decode_array(blob)
        if name not in got:
            result["passed"], result["outputs"][name] = False, {"max_abs": float("inf"), "atol": atol}
            result["outputs"][name].update(passed=False, missing=True)
            continue
        # a quantized file records, per output, the tolerance it was accepted with
        tolerance = float(golden.get("atols", {}).get(name, atol))
        err = np.abs(got[name].astype(np.float64) - expected.astype(np.float64))
        ok = bool(np.all(err <= tolerance + rtol * np.abs(expected)))
        result["outputs"][name] = {"max_abs": float(err.max(initial=0.0)), "atol": tolerance, "passed": ok}
        result["passed"] = result["passed"] and ok
    return result


def _sibling(name: str):
    """A module beside this file (stream.py, tokenizer.py): in the package, or copied into an app with it."""
    return importlib.import_module(f"{__package__}.{name}" if __package__ else name)


def _shape(shape: tuple) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ")"
