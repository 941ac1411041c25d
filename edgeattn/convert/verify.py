"""Parity: does the ONNX model compute what the Keras model computes? Answered as a ``ParityReport``.

Both sides get the same seeded inputs (several batch sizes; several lengths where the time axis is free, and
unequal lengths per input where the model takes them; token ids over the whole vocabulary, 0 and padding
included; booleans of both values). The report holds, per output and per layer, max abs / max rel / mean abs
error, the tensor's scale (its largest |reference| value), the tolerance it got, the worst case and sample and
a pass flag; it is truthy when everything passed. Nothing here prints.

The tolerance of a compared tensor is ``atol + rtol * scale``: float32 rounding grows with a tensor's
magnitude (a deep residual stream of ~10^3 rounds at ~10^-4), so a fixed ``atol`` fails correct deep models;
``rtol`` scales with the whole tensor, not element by element, so values near zero inside a large tensor do
not get a tolerance of zero.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import onnx

from edgeattn.convert.kerasmodel import keras_outputs, recorded_layers, vocab_size, with_layer_outputs
from edgeattn.core.errors import InputError, first_line
from edgeattn.graphs import graph
from edgeattn.graphs.cases import (  # noqa: F401 - the names that verify's callers have always found here
    DEFAULT_ATOL,
    DEFAULT_BATCHES,
    DEFAULT_RTOL,
    Case,
    InputSpec,
    OutputParity,
    ParityReport,
    cases_from_file,
    compare,
    describe,
    free_input_shapes,
    input_specs,
    make_cases,
    tolerance,
)
from edgeattn.graphs.onnxfile import load_onnx, open_session


def input_shapes_of(model: onnx.ModelProto) -> tuple:
    """The ONNX model's inputs as ``loading.InputShape``s (``cases.free_input_shapes``)."""
    from edgeattn.convert.loading import InputShape

    return tuple(InputShape(*entry) for entry in free_input_shapes(model))


def verify_against_keras(
    onnx_path: str | os.PathLike,
    keras_src: str | os.PathLike,
    batches=DEFAULT_BATCHES,
    lengths=None,
    atol: float = DEFAULT_ATOL,
    rtol: float = DEFAULT_RTOL,
    inputs_file: str | os.PathLike | None = None,
    seed: int = 0,
    unsafe: bool = False,
    providers=None,
    custom_layers=(),
    layers: bool = True,
) -> ParityReport:
    """Check ``onnx_path``'s structure, then its outputs against the Keras model in ``keras_src``; with
    ``layers`` (and an export that recorded them), every Keras layer's output too."""
    from edgeattn.convert import tfgraph
    from edgeattn.convert.layers import with_attention_output
    from edgeattn.convert.loading import load_model
    from edgeattn.runtime import ATTENTION_OUTPUT

    if tfgraph.is_graph_savedmodel(keras_src):  # no Keras config: the folder's own signature is the reference
        return _verify_graph_folder(onnx_path, keras_src, batches, lengths, atol, rtol, inputs_file, seed, unsafe,
                                     providers)  # fmt: skip
    proto = load_onnx(onnx_path)
    from edgeattn.convert import streamverify

    if streamverify.stream_meta(proto) is not None:  # a step or stateful model: its stream, step by step
        if inputs_file is not None:
            raise InputError("--inputs is not taken for a stream model: it is checked on seeded sequences")
        return streamverify.verify_stream(proto, keras_src, batches, lengths, atol, rtol, seed, unsafe, providers,
                                          custom_layers, layers)  # fmt: skip
    problems = graph.check_structure(proto)
    loaded = load_model(
        keras_src, unsafe=unsafe, custom_layers=custom_layers, input_shapes=input_shapes_of(proto)
    )
    keras_model = loaded.model
    meta = {p.key: p.value for p in proto.metadata_props}
    if ATTENTION_OUTPUT in [o.name for o in proto.graph.output]:
        keras_model = with_attention_output(keras_model, meta.get("edgeattn.attention_layer"))
    from edgeattn.convert import textmodel

    if textmodel.has_text_layer(keras_model):  # strings in: Keras's tokens and outputs on test texts
        return textmodel.verify(proto, keras_model, problems, compare=compare, case=Case, row=OutputParity,
                                layer_map=recorded_layers, atol=atol, rtol=rtol, seed=seed, providers=providers,
                                layers=layers, inputs_file=inputs_file)  # fmt: skip
    count = len(proto.graph.output)
    layer_map = recorded_layers(proto, keras_model) if layers else []
    if layer_map:  # the recorded tensors become extra outputs; Keras gives every layer's output
        proto = graph.with_outputs(proto, [tensor for _, tensor in layer_map], dtype=onnx.TensorProto.FLOAT)
        keras_model = with_layer_outputs(keras_model, [name for name, _ in layer_map])
    specs = input_specs(proto)
    if inputs_file is not None:
        cases = cases_from_file(inputs_file, specs)
    else:
        reference = lambda feed: keras_outputs(keras_model, feed)  # noqa: E731
        cases = make_cases(
            specs, batches=batches, lengths=lengths, seed=seed, vocab=vocab_size(keras_model), probe=reference
        )
    try:
        session = open_session(proto, providers)
    except Exception as exc:  # onnxruntime's own exception types
        problems.append(f"onnxruntime cannot load the model: {first_line(exc)}")
        return ParityReport(
            outputs=[],
            cases=[c.description for c in cases],
            inputs=describe(cases),
            provider="none",
            structure_problems=problems,
        )
    report = compare(lambda feed: keras_outputs(keras_model, feed), session, cases, atol=atol, rtol=rtol)
    report.structure_problems = problems
    report.layers = [replace(o, name=name) for o, (name, _) in zip(report.outputs[count:], layer_map)]
    report.outputs = report.outputs[:count]
    return report


def find_source(model: Path) -> tuple[Path, str]:
    """The Keras source recorded in an exported model's metadata, and a line saying so.

    Only a plain file (or SavedModel folder) name in the model's own folder is taken: a recorded absolute path,
    ``..`` or any other folder is not followed, nor a symbolic link; and the file must be the exported one
    (its recorded sha256), or it is refused. Anything else the user names with ``--keras``."""
    from edgeattn.core.files import sha256_of

    proto = load_onnx(model)
    meta = {p.key: p.value for p in proto.metadata_props}
    name = meta.get("edgeattn.source")
    recorded = meta.get("edgeattn.source_path")
    digest = meta.get("edgeattn.source_sha256")
    if not name:
        problems = graph.check_structure(proto)  # the graph first: a vendor op fails with or without a source
        if problems:
            from edgeattn.core.errors import CheckFailedError

            vendor = [p for p in problems if p.startswith("node ")]  # the op itself, before its opset import
            raise CheckFailedError(f"verify failed: {(vendor or problems)[0]}")
        raise InputError(f"{model} records no source model", hint="pass the Keras file with --keras SRC")
    if not _plain_name(name):
        raise InputError(
            f"{model} records its source as {name!r}, not a plain file name in the model's folder; "
            "edgeattn does not follow it",
            hint="pass the Keras file with --keras SRC",
        )
    # only beside the model: the recorded relative path counts when it is a plain name too
    names = [name] + ([recorded] if recorded and recorded != name and _plain_name(recorded) else [])
    found = next((c for c in (model.parent / n for n in names) if _source_here(c)), None)
    if found is None:
        where = f" (recorded at {recorded!r}, not followed)" if recorded and not _plain_name(recorded) else ""
        raise InputError(
            f"the source {name} recorded in {model} is not next to it{where}",
            hint="pass the Keras file with --keras SRC",
        )
    if not digest:
        return found, f"source: {found} (the export recorded no sha256)"
    if sha256_of(found) != digest:
        raise InputError(
            f"{found} is not the file that was exported (sha256 differs)",
            hint=f"to check this file anyway, name it: --keras {found}",
        )
    return found, f"source: {found} (sha256 matches the export)"


def _plain_name(name: str) -> bool:
    """A file name with no folder in it: not absolute, no separator or drive, not ``.`` or ``..``."""
    return bool(name) and name not in (".", "..") and not any(c in name for c in "/\\:\0")


def _source_here(path: Path) -> bool:
    """A regular file, or a SavedModel folder, that is not a symbolic link (nor holds one as its graph)."""
    if path.is_symlink():
        return False
    if path.is_file():
        return True
    graph_file = path / "saved_model.pb"
    return path.is_dir() and graph_file.is_file() and not graph_file.is_symlink()


def _verify_graph_folder(
    onnx_path,
    folder,
    batches,
    lengths=None,
    atol: float = 1e-4,
    rtol: float = 0.0,
    inputs_file=None,
    seed: int = 0,
    unsafe: bool = False,
    providers=None,
):
    """``verify.verify_against_keras`` for a graph SavedModel folder: the ONNX model against the folder's
    signature run by TensorFlow (the folder is scanned first, as for export)."""
    from edgeattn.convert.tfgraph import check_folder, load, output_order
    from edgeattn.core import files

    proto = load_onnx(onnx_path)
    problems = graph.check_structure(proto)
    folder = Path(folder)
    with files.private_copy(folder) as copy:
        found = check_folder(copy, unsafe=unsafe, shown=folder)
        source = load(copy, found, shown=folder)
    order = output_order(proto, source)
    specs = input_specs(proto)
    if inputs_file is not None:
        cases = cases_from_file(inputs_file, specs)
    else:
        cases = make_cases(specs, batches=batches, lengths=lengths, seed=seed, probe=source.reference(order))
    try:
        session = open_session(proto, providers)
    except Exception as exc:  # onnxruntime's own exception types
        problems.append(f"onnxruntime cannot load the model: {first_line(exc)}")
        return ParityReport([], [c.description for c in cases], describe(cases), "none", problems)
    report = compare(source.reference(order), session, cases, atol=atol, rtol=rtol)
    report.structure_problems = problems
    return report
