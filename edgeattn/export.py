"""Keras -> ONNX: convert with tf2onnx, clean the graph, check it, prove parity, stamp provenance, write.

Every export is checked before anything is written: the graph must pass ``onnx.checker``, use standard
domains only, hold every recurrent layer as one fused ``LSTM``/``GRU``/``RNN`` node (never ``Loop``/``Scan``),
keep the batch axis dynamic, and match Keras within tolerance on seeded inputs. A failed check raises
``CheckFailedError`` and leaves no file behind.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from edgeattn import (
    __version__,
    convs,
    defaults,
    fusion,
    graph,
    kerasmodel,
    layouts,
    matmuls,
    onnxfile,
    ortformat,
    recurrent,
    rows,
    shapes,
    verify,
)
from edgeattn.errors import CheckFailedError, InputError, UnsupportedModelError, require
from edgeattn.files import check_writable, write_atomic
from edgeattn.runtime import encode_array

PREDICTION_OUTPUT = "y"
LAYER_OUTPUTS_KEY = onnxfile.LAYER_OUTPUTS_KEY
SOURCE_FORMAT_KEY = onnxfile.SOURCE_FORMAT_KEY
DEFAULT_OPSET = defaults.OPSET
GOLDEN_SAMPLES = 4


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


@dataclass
class ExportResult:
    path: Path
    size_bytes: int
    summary: graph.GraphSummary
    parity: verify.ParityReport
    seconds: float
    dropped_nodes: int
    ort_max_abs: float | None = None  # ORT format only: largest difference from the ONNX model


def export(
    src: str | os.PathLike,
    out: str | os.PathLike,
    options: ExportOptions = ExportOptions(),
    progress: Callable[[str], None] | None = None,
) -> ExportResult:
    """Export the Keras model in ``src`` to the ONNX file ``out``; ``progress`` hears each stage's name."""
    say = progress or (lambda _stage: None)
    from edgeattn.loading import load_model

    start = time.perf_counter()
    out = Path(out)
    if out.suffix.lower() not in (".onnx", ".ort"):
        raise InputError(f"{out}: the output must end in .onnx (ONNX) or .ort (onnxruntime's ORT format)")
    check_writable(out, options.force)
    if out.suffix.lower() == ".ort":
        check_writable(ortformat.config_path(out), options.force)
    from edgeattn import tfgraph

    if tfgraph.is_graph_savedmodel(src):  # a SavedModel without a Keras config: its signature's graph
        return _export_graph_folder(src, out, options, say, start)
    say(f"reading {Path(src).name} (its config is checked before Keras sees it)")
    loaded = load_model(
        src,
        unsafe=options.unsafe,
        custom_layers=options.custom_layers,
        input_shapes=options.input_specs,
        max_params=options.max_params,
    )
    keras_model = loaded.model
    from edgeattn import textmodel

    text = textmodel.split_text(keras_model)  # a leading TextVectorization: export the numeric part
    keras_model = text.model if text is not None else keras_model
    if options.attention_weights:
        from edgeattn.layers import with_attention_output

        try:
            name = options.attention_weights if isinstance(options.attention_weights, str) else None
            keras_model = with_attention_output(keras_model, name)
        except ValueError as exc:
            raise UnsupportedModelError(str(exc)) from None

    problems = recurrent.unsupported(keras_model)
    if problems:
        message, details = _listed("cannot export", problems)
        raise UnsupportedModelError(
            message, hint="see the README's table of supported layers; nothing was written", details=details
        )
    # Each layer's output is converted as an extra output, so that the graph says which tensor holds it; the
    # extra outputs are dropped again after the clean-up (``edgeattn.layer_outputs`` keeps the names).
    probes = [name for name, _ in kerasmodel.layer_outputs(keras_model)] if options.layer_outputs else []
    converted = kerasmodel.with_layer_outputs(keras_model, probes) if probes else keras_model
    stand_in, directions = recurrent.stand_in(converted)
    say("converting with tf2onnx")
    proto = convert(stand_in, options.opset, like=keras_model)
    recurrent.swap_nodes(proto, directions)
    before = len(proto.graph.node)
    count = len(keras_model.outputs)
    output_names = _name_outputs(proto, options.attention_weights, count)
    graph.drop_zero_initial_states(proto)
    graph.last_step_from_final_state(proto)
    proto = graph.optimize_basic(proto)
    layer_map = [(name, o.name) for name, o in zip(probes, proto.graph.output[count:])]
    del proto.graph.output[count:]
    graph.prune_dead(proto)
    _speed_rewrites(proto, kerasmodel.vocab_size(keras_model), _time_steps(keras_model))
    produced = {o for node in proto.graph.node for o in node.output}
    layer_map = [(name, tensor) for name, tensor in layer_map if tensor in produced]
    graph.name_dynamic_axes(proto, time_free=_time_free(keras_model))

    _check_structure(proto, count_recurrent_layers(keras_model), output_names)

    specs = verify.input_specs(proto)
    reference = functools.partial(kerasmodel.keras_outputs, keras_model)
    cases = verify.make_cases(
        specs,
        vocab=kerasmodel.vocab_size(keras_model),
        trained_length=_time_steps(keras_model),
        probe=reference,  # unequal lengths per input where Keras takes them
    )
    say(f"checking parity with Keras on {verify.describe(cases)}")
    parity = verify.compare(
        reference,
        onnxfile.open_session(proto, ["cpu"]),
        cases,
        atol=options.atol,
        rtol=options.rtol,
    )
    if not parity:
        raise CheckFailedError(f"parity check failed: {parity.failures()[0]}", hint="nothing was written")

    import keras

    keras_facts = {
        "edgeattn.keras_version": keras.__version__,
        **({"edgeattn.attention_layer": _attention_layer(keras_model)} if options.attention_weights else {}),
        SOURCE_FORMAT_KEY: loaded.source.path_taken,
        LAYER_OUTPUTS_KEY: json.dumps(layer_map),
    }
    _stamp(
        proto,
        loaded.source.path,
        loaded.source.sha256,
        out,
        reference,
        options,
        parity,
        cases if options.golden else None,
        keras_facts,
    )
    if text is not None:  # what turns a string into the token ids, checked against Keras on test strings
        proto.metadata_props.add(key=textmodel.TEXT_KEY, value=textmodel.spec_json(text))
    return _write(proto, out, options, cases, say, parity, start, before)


def _check_structure(proto: onnx.ModelProto, recurrent: int | None, outputs: list[str]) -> None:
    """Refuse a graph that is not fit for the edge (see ``graph.check_structure``), listing every problem."""
    problems = graph.check_structure(proto, expect_recurrent=recurrent, expect_outputs=outputs)
    if problems:
        message, details = _listed("the exported graph is not fit for the edge", problems)
        raise CheckFailedError(message, hint="nothing was written", details=details)


def _write(
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


def _speed_rewrites(proto: onnx.ModelProto, vocab: int | None, steps: int | None) -> None:
    """The graph rewrites that only make the model faster (constant reshape targets, LayerNormalization, plain
    token lookups, fewer kernels around attention's products). Each checks its own result; one that fails in
    any other way is skipped, never the export."""

    @functools.cache  # the same seeded inputs for every rewrite that checks on them (they keep the inputs)
    def feeds() -> list[dict]:
        cases = verify.make_cases(
            verify.input_specs(proto), batches=(2, 5), vocab=vocab, trained_length=steps
        )
        return [case.feed for case in cases]

    for rewrite in (
        lambda: shapes.freeze_reshapes(proto, vocab, steps),
        lambda: rows.unflatten_rows(proto, vocab, steps),
        lambda: layouts.merge_layout_chains(proto, vocab, steps),
        lambda: layouts.squeeze_transposes(proto, vocab, steps),
        lambda: shapes.freeze_reshapes(proto, vocab, steps),
        lambda: shapes.freeze_shapes(proto, vocab, steps),
        lambda: fusion.fuse_layer_norms(proto, feeds()),
        lambda: fusion.fuse_gelus(proto, feeds()),
        lambda: convs.conv1d(proto, feeds()),
        lambda: fusion.plain_gather_indices(proto),
        lambda: matmuls.split_concat_products(proto, feeds()),
        lambda: matmuls.row_scores(proto, feeds()),
    ):
        before = onnx.ModelProto()
        before.CopyFrom(proto)
        try:
            rewrite()
        except Exception:  # onnx and onnxruntime raise many kinds; the graph as it was is still right
            proto.CopyFrom(before)


def convert(keras_model, opset: int = DEFAULT_OPSET, like=None) -> onnx.ModelProto:
    """The raw tf2onnx conversion, with an explicit input signature (batch axis free).

    ``like``: the model whose input names the signature takes (default: ``keras_model``). TensorFlow ops
    that tf2onnx cannot convert are refused, naming the Keras layer that uses them.
    """
    tf = require("tensorflow", "export")
    tf2onnx = require("tf2onnx", "export")
    like = like if like is not None else keras_model
    signature = [
        tf.TensorSpec((None, *tuple(t.shape)[1:]), tf.as_dtype(t.dtype), name=_input_name(t, i, like))
        for i, t in enumerate(like.inputs)
    ]
    wanted, opset = opset, min(opset, _tf2onnx_max_opset(tf2onnx))
    with _standard_gelu(tf), _unsupported_ops() as unsupported:
        try:
            proto, _ = tf2onnx.convert.from_keras(keras_model, input_signature=signature, opset=opset)
        except KeyError:
            # Keras 3 Sequential models with an Embedding fail inside from_keras; tracing the call works.
            function = tf.function(
                lambda *xs: keras_model(list(xs) if len(xs) > 1 else xs[0], training=False)
            )
            concrete = function.get_concrete_function(*signature)  # traced once; tf2onnx reuses it
            proto, _ = tf2onnx.convert.from_function(function, input_signature=signature, opset=opset)
            _freeze_captures(proto, concrete)
    if unsupported:
        _refuse_unsupported(
            [f"layer {_layer_of(node, like)!r}: TensorFlow op {op} ({node})" for node, op in unsupported],
            "write the layer with keras.ops (or standard TensorFlow math) instead; nothing was written",
        )
    return upgraded(proto, wanted)


def _tf2onnx_max_opset(tf2onnx) -> int:
    return max(tf2onnx.constants.OPSET_TO_IR_VERSION)


def upgraded(proto: onnx.ModelProto, opset: int) -> onnx.ModelProto:
    """``proto`` at ``opset`` (tf2onnx writes up to 18; a higher opset, for ``Gelu`` at 20, is reached with
    onnx's version converter)."""
    if graph.opset_of(proto) >= opset:
        return proto
    from onnx import version_converter

    try:
        return version_converter.convert_version(proto, opset)
    except Exception as exc:  # onnx raises its own converter errors
        raise UnsupportedModelError(
            f"cannot write opset {opset}: onnx's version converter stopped: {str(exc).splitlines()[0]}",
            hint=f"use --opset {graph.opset_of(proto)} or lower; nothing was written",
        ) from None


def _refuse_unsupported(found: list[str], hint: str) -> None:
    """The one error for TensorFlow ops that tf2onnx cannot convert (``found``: one line each)."""
    raise UnsupportedModelError(
        f"cannot convert: {found[0]}, which tf2onnx has no ONNX form for"
        if len(found) == 1
        else f"cannot convert {len(found)} TensorFlow ops, which tf2onnx has no ONNX form for:",
        details=found if len(found) > 1 else [],
        hint=hint,
    )


def _freeze_captures(proto: onnx.ModelProto, concrete) -> None:
    """Constants that the traced function captured (a layer's precomputed table, say) as initializers:
    tf2onnx's ``from_function`` leaves them as graph inputs."""
    from onnx import numpy_helper

    captured = {
        internal.name: external
        for external, internal in zip(concrete.captured_inputs, concrete.graph.internal_captures)
        if external.dtype.name != "resource"
    }
    for value in list(proto.graph.input):
        if value.name in captured:
            array = np.asarray(captured[value.name].numpy())
            proto.graph.initializer.append(numpy_helper.from_array(array, value.name))
            proto.graph.input.remove(value)


@contextlib.contextmanager
def _standard_gelu(tf):
    """While converting, ``tf.nn.gelu`` computes the exact GELU with ``Erf`` (TensorFlow's uses ``Erfc``,
    which tf2onnx cannot convert). Keras' ``gelu`` activation calls it; the parity check then compares the
    result with the unchanged Keras model."""
    from edgeattn import tfops

    original = tf.nn.gelu
    tf.nn.gelu = lambda features, approximate=False, name=None: tfops.gelu(tf.math, features, approximate)
    try:
        yield
    finally:
        tf.nn.gelu = original


UNSUPPORTED_OP = re.compile(r"Tensorflow op \[(?P<node>.+): (?P<op>\w+)\] is not supported")


@contextlib.contextmanager
def _unsupported_ops():
    """Collect what tf2onnx reports as unsupported ((node, op) pairs) instead of letting it print."""
    found: list[tuple[str, str]] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            match = UNSUPPORTED_OP.search(record.getMessage())
            if match and (match["node"], match["op"]) not in found:
                found.append((match["node"], match["op"]))

    logger = logging.getLogger("tf2onnx")
    handler, propagate = Collect(), logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield found
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


def _layer_of(node: str, keras_model) -> str:
    """The Keras layer that a TensorFlow node name (``model/dense_5_1/Gelu/Erfc``) comes from."""
    names = {layer.name for layer in kerasmodel.walk_layers(keras_model)}
    for part in node.split("/"):
        for candidate in (part, re.sub(r"_\d+$", "", part)):
            if candidate in names:
                return candidate
    return node.split("/")[1] if "/" in node else node


def _input_name(tensor, index: int, keras_model) -> str:
    name = getattr(tensor, "name", None) or f"input_{index}"
    if len(keras_model.inputs) == 1 and name.startswith(("keras_tensor", "input_layer")):
        return "x"
    return name.split(":")[0]


def _name_outputs(proto: onnx.ModelProto, attention_weights: bool, count: int) -> list[str]:
    """Rename the first ``count`` graph outputs (the model's; layer outputs may follow): ``y`` (or Keras's
    names when there are several), then ``attention_weights``."""
    from edgeattn.runtime import ATTENTION_OUTPUT

    outputs = [o.name for o in proto.graph.output][:count]
    predictions = outputs[:-1] if attention_weights else outputs
    if len(predictions) == 1:
        graph.rename_value(proto, predictions[0], PREDICTION_OUTPUT)
    if attention_weights:
        graph.rename_value(proto, outputs[-1], ATTENTION_OUTPUT)
    return [o.name for o in proto.graph.output][:count]


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


def count_recurrent_layers(keras_model) -> int:
    """How many fused recurrent nodes the export must hold (a Bidirectional counts once: one node)."""
    import keras

    recurrent = (keras.layers.RNN, keras.layers.Bidirectional)
    return sum(1 for layer in kerasmodel.walk_layers(keras_model) if isinstance(layer, recurrent))


def _time_free(keras_model) -> bool:
    return any(len(t.shape) >= 2 and t.shape[1] is None for t in keras_model.inputs)


def _time_steps(keras_model) -> int | None:
    shape = keras_model.inputs[0].shape
    return shape[1] if len(shape) >= 2 and isinstance(shape[1], int) else None


def _attention_layer(keras_model) -> str:
    """The name of the layer whose weights ``with_attention_output`` made the last output."""
    history = keras_model.outputs[-1]._keras_history
    return history.operation.name


def _listed(what: str, problems: list[str]) -> tuple[str, list[str]]:
    """(message, details) for an error about one or several problems: one line each."""
    if len(problems) == 1:
        return f"{what}: {problems[0]}", []
    return f"{what}: {len(problems)} problems:", problems


def _stamp(
    proto, source: Path, sha256: str, out: Path, reference, options: ExportOptions, parity, cases, facts: dict
) -> None:
    """Write provenance (and the golden reference set: ``reference``'s outputs on the last parity case) into
    ``metadata_props``, keys prefixed ``edgeattn.``; ``sha256``: of the checked copy of ``source``; ``facts``:
    what this source's path adds."""
    import tensorflow as tf
    import tf2onnx

    meta = {
        "edgeattn.version": __version__,
        "edgeattn.tensorflow_version": tf.__version__,
        "edgeattn.tf2onnx_version": tf2onnx.__version__,
        "edgeattn.onnx_version": onnx.__version__,
        "edgeattn.opset": str(graph.opset_of(proto)),
        "edgeattn.source": source.name,
        # relative to the exported file: no path of the machine that exported it
        "edgeattn.source_path": os.path.relpath(source.resolve(), out.resolve().parent),
        "edgeattn.source_sha256": sha256,
        "edgeattn.inputs": json.dumps(
            [{"name": s.name, "shape": list(s.shape), "dtype": s.dtype} for s in verify.input_specs(proto)]
        ),
        "edgeattn.parity": json.dumps(
            {
                "max_abs": parity.max_abs,
                "atol": options.atol,
                "rtol": options.rtol,
                "cases": parity.cases,
                "provider": parity.provider,
            }
        ),
        **facts,
    }
    if cases:
        feed = {k: v[:GOLDEN_SAMPLES] for k, v in cases[-1].feed.items()}
        golden = {
            "inputs": {k: encode_array(v) for k, v in feed.items()},
            "outputs": {o.name: encode_array(a) for o, a in zip(proto.graph.output, reference(feed))},
            "atol": options.atol,
        }
        meta["edgeattn.golden"] = json.dumps(golden)
    del proto.metadata_props[:]
    for key, value in meta.items():
        proto.metadata_props.add(key=key, value=value)
    proto.producer_name = "edgeattn"
    proto.producer_version = __version__


# -- SavedModel folders without a Keras config: the serving signature's graph (edgeattn.tfgraph) ---------


def convert_signature(source, opset: int):
    """The signature converted by tf2onnx (``from_function`` with the signature's input specs); returns the
    ONNX model and the output keys in the order of its outputs. Ops that tf2onnx cannot convert are refused."""
    tf = require("tensorflow", "export")
    tf2onnx = require("tf2onnx", "export")
    signature, keys = source.function, source.input_keys
    function = tf.function(lambda *xs: signature(**dict(zip(keys, xs))), input_signature=source.specs)
    concrete = function.get_concrete_function(*source.specs)
    with _unsupported_ops() as unsupported:
        proto, _ = tf2onnx.convert.from_function(
            function, input_signature=source.specs, opset=min(opset, _tf2onnx_max_opset(tf2onnx))
        )
    if unsupported:
        _refuse_unsupported(
            [f"TensorFlow op {op} ({node})" for node, op in unsupported], "nothing was written"
        )
    _freeze_captures(proto, concrete)
    proto = upgraded(proto, opset)
    order = [o.name for o in proto.graph.output]
    if sorted(order) != sorted(source.output_keys):
        raise UnsupportedModelError(
            f"tf2onnx named the outputs {order}, the signature {source.output_keys}",
            hint="nothing was written",
        )
    return proto, order


def _export_graph_folder(src, out: Path, options, say, start: float):
    """``edgeattn.export.export`` for a graph SavedModel folder: scan, load, convert, then the same clean-up,
    structure check, parity (against the signature run by TensorFlow), metadata and atomic write."""
    from edgeattn import files
    from edgeattn.savedmodel import SAVED_MODEL
    from edgeattn.tfgraph import check_folder, load

    src = Path(src)
    if options.attention_weights:
        raise UnsupportedModelError(
            f"{src} has no Keras layers: --attention-weights cannot find an attention layer in it",
            hint="export it without --attention-weights; a signature output that holds the weights is kept",
        )
    # --custom-layers is not needed here (the graph holds the layers' computation) and is not imported
    with files.private_copy(src) as copy:
        say(f"reading {src.name}/{SAVED_MODEL} as data (its ops are checked before TensorFlow loads it)")
        found = check_folder(copy, unsafe=options.unsafe, shown=src)
        say(f"loading the SavedModel with TensorFlow (signature {found['signature']!r})")
        source = load(copy, found, shown=src)
        digest = files.sha256_of(copy)  # of what was checked and loaded
        say("converting the signature with tf2onnx")
        proto, order = convert_signature(source, options.opset)
    before = len(proto.graph.node)
    count = len(proto.graph.output)
    output_names = _name_outputs(proto, False, count)
    graph.drop_zero_initial_states(proto)
    graph.last_step_from_final_state(proto)
    proto = graph.optimize_basic(proto)
    graph.prune_dead(proto)
    _speed_rewrites(proto, None, source.time_steps)
    graph.name_dynamic_axes(proto, time_free=source.time_free)

    _check_structure(proto, found["loops"] or None, output_names)

    cases = verify.make_cases(
        verify.input_specs(proto), trained_length=source.time_steps, probe=source.reference(order)
    )
    say(f"checking parity with the SavedModel's signature on {verify.describe(cases)}")
    parity = verify.compare(
        source.reference(order),
        onnxfile.open_session(proto, ["cpu"]),
        cases,
        atol=options.atol,
        rtol=options.rtol,
    )
    if not parity:
        raise CheckFailedError(f"parity check failed: {parity.failures()[0]}", hint="nothing was written")

    from edgeattn.onnxfile import SIGNATURE_OUTPUTS_KEY
    from edgeattn.tfgraph import SIGNATURE_KEY, SOURCE_FORMAT

    _stamp(
        proto,
        src,
        digest,
        out,
        source.reference(order),
        options,
        parity,
        cases if options.golden else None,
        {
            SOURCE_FORMAT_KEY: SOURCE_FORMAT,
            "edgeattn.source_tensorflow_version": source.scan.get("saved_by") or "unknown",
            SIGNATURE_KEY: source.signature_name,
            SIGNATURE_OUTPUTS_KEY: json.dumps(order),
        },
    )
    return _write(proto, out, options, cases, say, parity, start, before)
