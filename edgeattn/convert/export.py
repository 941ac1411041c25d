"""Keras -> ONNX: convert with tf2onnx, clean the graph, check it, prove parity, stamp provenance, write.

Every export is checked before anything is written: the graph must pass ``onnx.checker``, use standard
domains only, hold every recurrent layer as one fused ``LSTM``/``GRU``/``RNN`` node (never ``Loop``/``Scan``),
keep the batch axis dynamic, and match Keras within tolerance on seeded inputs. A failed check raises
``CheckFailedError`` and leaves no file behind.

This module is the flow (``export``, for Keras models and for graph SavedModel folders) and its atomic write;
the steps are in ``tfconvert`` (the tf2onnx conversion), ``cleanup`` (output names, speed rewrites, the
structure check) and ``provenance`` (the metadata stamped into the model).
"""

from __future__ import annotations

import functools
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import onnx

from edgeattn.convert import kerasmodel, recurrent, verify
from edgeattn.convert.cleanup import (  # noqa: F401 - PREDICTION_OUTPUT: still found here, as before the split
    PREDICTION_OUTPUT,
    _check_structure,
    _listed,
    _name_outputs,
    _speed_rewrites,
    tidied,
)
from edgeattn.convert.kerasmodel import count_recurrent_layers, time_free, time_steps
from edgeattn.convert.provenance import GOLDEN_SAMPLES, _stamp  # noqa: F401 - GOLDEN_SAMPLES: as before
from edgeattn.convert.tfconvert import (  # noqa: F401 - export.convert (scripts/benchmark.py), upgraded: as before
    convert,
    convert_signature,
    upgraded,
)
from edgeattn.convert.written import DEFAULT_OPSET, ExportOptions, ExportResult, write  # noqa: F401 - as before
from edgeattn.core.errors import CheckFailedError, InputError, UnsupportedModelError
from edgeattn.core.files import check_writable
from edgeattn.graphs import graph, onnxfile, ortformat

LAYER_OUTPUTS_KEY = onnxfile.LAYER_OUTPUTS_KEY
SOURCE_FORMAT_KEY = onnxfile.SOURCE_FORMAT_KEY


def export(
    src: str | os.PathLike,
    out: str | os.PathLike,
    options: ExportOptions = ExportOptions(),  # noqa: B008 - frozen, so one shared default is safe
    progress: Callable[[str], None] | None = None,
) -> ExportResult:
    """Export the Keras model in ``src`` to the ONNX file ``out``; ``progress`` hears each stage's name."""
    say = progress or (lambda _stage: None)
    from edgeattn.convert.loading import load_model

    start = time.perf_counter()
    out = Path(out)
    if out.suffix.lower() not in (".onnx", ".ort"):
        raise InputError(f"{out}: the output must end in .onnx (ONNX) or .ort (onnxruntime's ORT format)")
    check_writable(out, options.force)
    if out.suffix.lower() == ".ort":
        check_writable(ortformat.config_path(out), options.force)
    from edgeattn.convert import tfgraph

    if tfgraph.is_graph_savedmodel(src):  # a SavedModel without a Keras config: its signature's graph
        if options.streaming:
            raise UnsupportedModelError(
                f"{src} has no Keras layers: --streaming rebuilds a model layer by layer",
                hint="export the Keras model it was saved from, or this folder without --streaming",
            )
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
    from edgeattn.convert import textmodel

    text = textmodel.split_text(keras_model)  # a leading TextVectorization: export the numeric part
    keras_model = text.model if text is not None else keras_model
    if options.attention_weights:
        from edgeattn.convert.layers import with_attention_output

        try:
            name = options.attention_weights if isinstance(options.attention_weights, str) else None
            keras_model = with_attention_output(keras_model, name)
        except ValueError as exc:
            raise UnsupportedModelError(str(exc)) from None

    from edgeattn.convert import streamexport, streaming

    if options.streaming or streaming.stateful_layers(keras_model):
        if text is not None:
            raise UnsupportedModelError("a text model (TextVectorization) cannot be streamed")
        return streamexport.export_stream(loaded, keras_model, out, options, say, start)
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
    proto, layer_map = tidied(proto, probes, count)
    _speed_rewrites(proto, kerasmodel.vocab_size(keras_model), time_steps(keras_model))
    produced = {o for node in proto.graph.node for o in node.output}
    layer_map = [(name, tensor) for name, tensor in layer_map if tensor in produced]
    graph.name_dynamic_axes(proto, time_free=time_free(keras_model))

    _check_structure(proto, count_recurrent_layers(keras_model), output_names)

    specs = verify.input_specs(proto)
    reference = functools.partial(kerasmodel.keras_outputs, keras_model)
    cases = verify.make_cases(
        specs,
        vocab=kerasmodel.vocab_size(keras_model),
        trained_length=time_steps(keras_model),
        probe=reference,  # unequal lengths per input where Keras takes them
    )
    say(f"checking parity with Keras on {verify.describe(cases)}")
    parity = _checked_parity(reference, proto, cases, options)

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
    return write(proto, out, options, cases, say, parity, start, before)


def _checked_parity(reference, proto: onnx.ModelProto, cases, options: ExportOptions):
    """Parity of the graph the file holds (standard ops, not the Predictor's in-memory fusion) with
    ``reference`` on ``cases``; a failure raises, and nothing is written."""
    parity = verify.compare(
        reference,
        onnxfile.open_session(proto, ["cpu"], fuse_for_runtime=False),
        cases,
        atol=options.atol,
        rtol=options.rtol,
    )
    if not parity:
        raise CheckFailedError(f"parity check failed: {parity.failures()[0]}", hint="nothing was written")
    return parity


def _attention_layer(keras_model) -> str:
    """The name of the layer whose weights ``with_attention_output`` made the last output."""
    history = keras_model.outputs[-1]._keras_history
    return history.operation.name


# -- SavedModel folders without a Keras config: the serving signature's graph (edgeattn.convert.tfgraph) ---------


def _export_graph_folder(src, out: Path, options, say, start: float):
    """``edgeattn.convert.export.export`` for a graph SavedModel folder: scan, load, convert, then the same clean-up,
    structure check, parity (against the signature run by TensorFlow), metadata and atomic write."""
    from edgeattn.convert.savedmodel import SAVED_MODEL
    from edgeattn.convert.tfgraph import check_folder, load
    from edgeattn.core import files

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
    parity = _checked_parity(source.reference(order), proto, cases, options)

    from edgeattn.convert.tfgraph import SIGNATURE_KEY, SOURCE_FORMAT
    from edgeattn.graphs.onnxfile import SIGNATURE_OUTPUTS_KEY

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
    return write(proto, out, options, cases, say, parity, start, before)
