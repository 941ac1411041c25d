"""Export of a model that carries its state: a stateful model (``stateful=True`` layers: whole chunks a run,
the state as inputs and outputs) and the step model of ``export --streaming`` (one time step a run).

The flow is the export's (``edgeattn.convert.export``): the model rebuilt by ``streaming.build``, converted
through the recurrent stand-ins (one fused node per layer), each carried recurrent state wired to graph inputs
and outputs on its fused node (``graphs.streamstates``), the clean-up and the structure check; then, instead
of the per-call parity, the stream check (``streamverify``: seeded sequences stepped through from the initial
state against Keras on the whole sequence); the metadata entry ``edgeattn.stream`` says which inputs and
outputs are states. A failed check writes nothing.
"""

from __future__ import annotations

import contextlib
import json

import onnx

from edgeattn.convert import kerasmodel, recurrent, streaming, streamverify, tfconvert, written
from edgeattn.convert.cleanup import _check_structure, _listed, _name_outputs, _speed_rewrites, tidied
from edgeattn.core.errors import CheckFailedError, UnsupportedModelError
from edgeattn.graphs import graph, onnxfile, stepgraph, streamstates
from edgeattn.graphs.cases import Case


def export_stream(loaded, keras_model, out, options, say, start: float):
    """``export.export`` for a stateful model or (``options.streaming``) a step model; ``loaded``: what
    ``load_model`` gave, ``keras_model``: the model to export."""
    kind = "step" if options.streaming else "stateful"
    if options.attention_weights:
        raise UnsupportedModelError(f"--attention-weights is not available for a {kind} model yet")
    say(
        f"rebuilding {keras_model.name!r} as a {kind} model"
        + (" (one time step a run)" if kind == "step" else "")
    )
    stream = streaming.build(keras_model, kind, options.max_steps)
    problems = recurrent.unsupported(stream.model)
    if problems:
        message, details = _listed("cannot export", problems)
        raise UnsupportedModelError(message, hint="nothing was written", details=details)
    reference_layers = {name for name, _ in kerasmodel.layer_outputs(stream.reference)}
    probes = (
        [n for n, _ in kerasmodel.layer_outputs(stream.model) if n in reference_layers]
        if options.layer_outputs
        else []
    )
    converted = kerasmodel.with_layer_outputs(stream.model, probes) if probes else stream.model
    stand_in, directions = recurrent.stand_in(converted)
    say("converting with tf2onnx")
    proto = tfconvert.convert(stand_in, options.opset, like=stream.model)
    fused = recurrent.swap_nodes(proto, directions)
    before = len(proto.graph.node)
    count = len(stream.model.outputs)
    _name_outputs(proto, False, stream.data_outputs)
    names = {
        o.name: s.output for o, s in zip(proto.graph.output[stream.data_outputs : count], stream.keras_states)
    }
    names.update(
        {i.name: s.input for i, s in zip(proto.graph.input[stream.data_inputs :], stream.keras_states)}
    )
    for old, new in names.items():
        graph.rename_value(proto, old, new)
    proto, layer_map = tidied(proto, probes, count)
    for node, layers in fused.items():
        states = [stream.recurrent.get(layer.name) for layer in layers]
        if all(states):
            roles = [[(s.name.rsplit("_", 1)[-1], s.input, s.shape[0]) for s in d] for d in states]  # h, c
            streamstates.expose(proto, node, roles)
    done = {layer.name for layers in fused.values() for layer in layers}
    missing = [name for name in stream.recurrent if name not in done]
    if missing:
        raise CheckFailedError(f"the recurrent layer {missing[0]!r} has no fused node to carry its state")
    steps = 1 if kind == "step" else kerasmodel.time_steps(keras_model)
    _speed_rewrites(proto, kerasmodel.vocab_size(keras_model), steps)
    if kind == "step":  # it rewrites a copy: on any failure the graph stays as it was, and right
        with contextlib.suppress(Exception):  # onnx and onnxruntime raise many kinds
            stepgraph.fewer_reshapes(proto, kerasmodel.vocab_size(keras_model))
    produced = {o for node in proto.graph.node for o in node.output}
    layer_map = [(name, tensor) for name, tensor in layer_map if tensor in produced]
    graph.name_dynamic_axes(proto, time_free=kind == "stateful" and kerasmodel.time_free(keras_model))
    _check_structure(
        proto, kerasmodel.count_recurrent_layers(stream.model), [o.name for o in proto.graph.output]
    )

    meta = {
        "kind": kind,
        "max_steps": options.max_steps if any(s.grows for s in stream.states) else None,
        "inputs": [i.name for i in proto.graph.input[: stream.data_inputs]],
        "outputs": [o.name for o in proto.graph.output[: stream.data_outputs]],
        "states": [s.as_json() for s in stream.states],
    }
    streamstates.name_axes(proto, meta, kerasmodel.time_steps(keras_model))
    probed = (
        graph.with_outputs(proto, [t for _, t in layer_map], dtype=onnx.TensorProto.FLOAT)
        if layer_map
        else proto
    )
    session = onnxfile.open_session(probed, ["cpu"], fuse_for_runtime=False)
    stateful = keras_model if kind == "stateful" else None  # its own run, chunk by chunk, is the reference
    batches = streamverify.fixed_batch(stateful) or (1, 3)
    cases = streamverify.sequence_cases(session, meta, streamverify.EXPORT_LENGTHS, batches,
                                        vocab=kerasmodel.vocab_size(keras_model))  # fmt: skip
    say(f"checking the stream against Keras on {len(cases)} seeded sequences, step by step")
    parity = streamverify.check(
        session, stream.reference, meta, cases, layer_map, options.atol, options.rtol, stateful
    )
    if not parity:
        raise CheckFailedError(f"stream check failed: {parity.failures()[0]}", hint="nothing was written")

    import keras

    from edgeattn.convert.provenance import _stamp

    facts = {
        "edgeattn.keras_version": keras.__version__,
        onnxfile.SOURCE_FORMAT_KEY: loaded.source.path_taken,
        onnxfile.LAYER_OUTPUTS_KEY: json.dumps(layer_map),
        streamstates.STREAM_KEY: json.dumps(meta),
    }
    # no golden set: a step's outputs depend on the state carried to it (verify steps whole sequences instead)
    _stamp(proto, loaded.source.path, loaded.source.sha256, out, None, options, parity, None, facts)
    parity.inputs = f"{parity.inputs}, fed {'one step' if kind == 'step' else 'one chunk'} a run"
    checked = []
    if out.suffix.lower() == ".ort":  # the runs of one sequence: what the ORT-format twin must give as well
        feeds = streamverify.runs(session, meta, cases[-1].feed, [], streamverify.chunk_of(session, meta))
        checked = [Case(f"run {i}", feed) for i, (feed, _) in enumerate(feeds)]
    result = written.write(proto, out, options, checked, say, parity, start, before)
    result.stream = meta
    return result
