"""Text models: a Keras model that starts with ``TextVectorization`` (``output_mode="int"``).

The export takes the model's numeric part (int64 token ids in, the model's outputs out) and stores in the ONNX
file, as JSON under ``metadata_props`` key ``edgeattn.text``, what turns a string into those ids: the
vocabulary, the mask/OOV/padding rules, ``output_sequence_length``, the standardize and split settings. The
Python tokenizer (``edgeattn.tokenizer``) and the JavaScript one (``web_assets/edgeattn.js``) follow it.

Here: finding the leading layer in a loaded model, the numeric sub-model, the spec, and the parity check on
strings: Keras's tokens (the layer, run by TensorFlow) against the tokenizer's, and Keras's outputs on the
strings against onnxruntime's on the tokenizer's ids. Keras and TensorFlow are imported inside the functions.
What needs neither (the config check run on the file's config as data, before Keras sees it; the test strings;
the texts ``predict`` reads) is ``edgeattn.convert.textdata``, whose names are imported back here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from edgeattn import runtime
from edgeattn.convert.textdata import (  # noqa: F401 - the names that textmodel's callers have always found here
    config_problem,
    describe_spec,
    probe_texts,
    read_texts,
)
from edgeattn.core.errors import CheckFailedError, UnsupportedModelError
from edgeattn.tokenizer import PUNCTUATION, SPEC_VERSION, WHITESPACE, Tokenizer

TEXT_KEY = runtime.TEXT_KEY  # one name, kept by the light runtime (which reads it for predict_text)
LAYER = "TextVectorization"
EXAMPLES = 8  # Keras's own tokens on this many test strings travel in the spec (for tokenizers' self-checks)


# -- the loaded model -------------------------------------------------------------------------------------


@dataclass
class TextPart:
    layer: object  # the keras TextVectorization layer
    model: object  # the numeric part: int64 token ids -> the model's outputs
    full: object  # the whole model: strings -> outputs
    spec: dict  # what the tokenizers follow (``edgeattn.text``), without the examples

    @property
    def tokenizer(self) -> Tokenizer:
        return Tokenizer(self.spec)


def has_text_layer(keras_model) -> bool:
    from keras.layers import TextVectorization

    from edgeattn.convert.kerasmodel import walk_layers

    return any(isinstance(layer, TextVectorization) for layer in walk_layers(keras_model))


def split_text(keras_model) -> TextPart | None:
    """The text part of a model that starts with a ``TextVectorization``: None for a model without one;
    ``UnsupportedModelError`` naming the layer for one the tokenizers cannot follow or that is not at the start
    (the only consumer of the model's only input)."""
    import keras

    from edgeattn.convert.kerasmodel import walk_layers

    found = [layer for layer in walk_layers(keras_model) if isinstance(layer, keras.layers.TextVectorization)]
    if not found:
        return None
    layer = found[0]
    hint = (
        "edgeattn exports a TextVectorization that is the model's first layer, fed by its only (string) input"
    )
    graph = getattr(keras_model, "_functional", None) or keras_model  # a Sequential keeps its graph there
    nodes = [
        n for depth in getattr(graph, "_nodes_by_depth", {}).values() for n in depth if n.operation is layer
    ]
    if (
        len(found) > 1
        or layer not in keras_model.layers
        or len(keras_model.inputs) != 1
        or len(nodes) != 1
        or len(nodes[0].input_tensors) != 1
        or nodes[0].input_tensors[0] is not keras_model.inputs[0]
    ):
        raise UnsupportedModelError(
            f"TextVectorization layer {layer.name!r} is not at the start of the model", hint=hint
        )
    spec = layer_spec(layer)
    try:
        numeric = keras.Model(nodes[0].output_tensors[0], keras_model.outputs, name=keras_model.name)
    except ValueError as exc:  # an output that also depends on the strings by another way
        raise UnsupportedModelError(
            f"TextVectorization layer {layer.name!r}: the rest of the model is not a function of its tokens ({exc})",
            hint=hint,
        ) from None
    numeric.inputs[0].name = "tokens"  # the ONNX input's name
    return TextPart(layer=layer, model=numeric, full=keras_model, spec=spec)


def layer_spec(layer) -> dict:
    """What the tokenizers follow for a built ``TextVectorization`` layer (``UnsupportedModelError`` when they
    cannot follow it)."""
    problem = config_problem(_plain_config(layer))
    if problem:
        raise UnsupportedModelError(f"TextVectorization layer {layer.name!r}: {problem}")
    lookup = layer._lookup_layer
    if lookup.num_oov_indices != 1 or lookup.mask_token != "":
        raise UnsupportedModelError(
            f"TextVectorization layer {layer.name!r}: {lookup.num_oov_indices} OOV indices and mask token "
            f"{lookup.mask_token!r}; the tokenizers follow one OOV index and the mask token ''"
        )
    config = layer.get_config()
    return {
        "version": SPEC_VERSION,
        "layer": layer.name,
        "input": "tokens",
        "standardize": config["standardize"],
        "split": config["split"],
        "lowercase": "ascii A-Z only (tf.strings.lower)",
        "strip": PUNCTUATION,
        "whitespace": WHITESPACE,
        "output_sequence_length": config["output_sequence_length"],
        "mask_token": lookup.mask_token,
        "mask_index": 0,
        "oov_token": lookup.oov_token,
        "oov_index": 1,
        "num_oov_indices": int(lookup.num_oov_indices),
        "pad_index": 0,
        "vocabulary": [str(t) for t in layer.get_vocabulary()],
    }


def _plain_config(layer) -> dict:
    config = dict(layer.get_config())
    config.pop("vocabulary", None)  # the built layer holds it as data, whatever the file said
    for key in ("standardize", "split"):
        if callable(config.get(key)):
            config[key] = {"callable": repr(config[key])}
    return config


def keras_tokens(part: TextPart, texts: list[str]) -> np.ndarray:
    """The TextVectorization layer's own output on ``texts`` (one batch), computed by TensorFlow."""
    return np.asarray(part.layer(_string_batch(part, texts))).astype(np.int64)


def keras_text_outputs(part: TextPart, texts: list[str]) -> list[np.ndarray]:
    """The whole Keras model's outputs on ``texts`` (one batch), strings in."""
    import keras

    result = part.full(_string_batch(part, texts), training=False)
    result = result if isinstance(result, (list, tuple)) else [result]
    return [np.asarray(keras.ops.convert_to_numpy(r)) for r in result]


def _string_batch(part: TextPart, texts: list[str]):
    import tensorflow as tf

    rank = len(part.full.inputs[0].shape)
    batch = tf.constant(list(texts), dtype=tf.string)
    return tf.reshape(batch, [len(texts)] + [1] * (rank - 1))


# -- the spec stored in the ONNX file ---------------------------------------------------------------------


def spec_json(part: TextPart) -> str:
    """The spec as stored in the ONNX file, with Keras's own tokens on a few test strings; the tokenizer must
    give the same ids on every test string (``CheckFailedError`` otherwise)."""
    texts = probe_texts(part.spec)
    want = keras_tokens(part, texts)
    got = np.asarray(part.tokenizer(texts), np.int64).reshape(len(texts), -1)
    if got.shape != want.shape or not np.array_equal(got, want):
        bad = next(
            i for i in range(len(texts)) if got.shape != want.shape or not np.array_equal(got[i], want[i])
        )
        raise CheckFailedError(
            f"TextVectorization layer {part.layer.name!r}: edgeattn's tokenizer differs from Keras on {texts[bad]!r}",
            hint="nothing was written",
        )
    chosen = texts[2 : 2 + EXAMPLES // 2] + texts[-(EXAMPLES - EXAMPLES // 2) :]  # odd ones, vocabulary ones
    examples = [{"text": t, "ids": [int(i) for i in keras_tokens(part, [t])[0]]} for t in chosen]
    return json.dumps({**part.spec, "examples": examples}, ensure_ascii=False)


# -- verify on strings ------------------------------------------------------------------------------------


def verify(
    proto,
    keras_model,
    problems: list[str],
    *,
    compare,
    case,
    row,
    layer_map,
    atol,
    rtol,
    seed=0,
    providers=None,
    layers=True,
    inputs_file=None,
):
    """The ParityReport of a text model: per output, Keras on strings against onnxruntime on the tokenizer's
    ids; the first row of ``layers`` is the tokens (Keras's against the tokenizer's, which must be equal); then,
    with ``layers``, every layer of the numeric part recorded at export. ``compare``, ``case``, ``row`` and
    ``layer_map``: ``edgeattn.convert.verify``'s comparison, its Case and OutputParity classes and its recorded-layer
    reader (passed in: verify calls this module, so this module does not import verify)."""
    from dataclasses import replace

    from edgeattn.convert.kerasmodel import keras_outputs, with_layer_outputs
    from edgeattn.graphs import graph
    from edgeattn.graphs.onnxfile import open_session

    part = split_text(keras_model)
    meta = {p.key: p.value for p in proto.metadata_props}
    if TEXT_KEY not in meta:
        problems.append(f"the ONNX model holds no {TEXT_KEY} (export it again with this edgeattn)")
        spec = part.spec
    else:
        spec = json.loads(meta[TEXT_KEY])
    tokenizer = Tokenizer(spec)
    texts = read_texts(inputs_file) if inputs_file is not None else probe_texts(part.spec, seed)
    # one text with tokens alone (Keras's recurrent layers cannot run a batch of no tokens), a few, all
    batches = [[next((t for t in texts if tokenizer([t]) and tokenizer([t])[0]), texts[0])], texts[:8], texts]
    count = len(proto.graph.output)
    recorded = layer_map(proto, part.model) if layers else []
    numeric = part.model
    if recorded:
        proto = graph.with_outputs(proto, [tensor for _, tensor in recorded], dtype=1)  # FLOAT
        numeric = with_layer_outputs(part.model, [name for name, _ in recorded])
    session = open_session(proto, providers)
    name = session.get_inputs()[0].name
    cases, references, token_rows = [], {}, []
    for i, batch in enumerate(batches):
        want = keras_tokens(part, batch)
        got = np.asarray(tokenizer(batch), np.int64).reshape(len(batch), -1)
        token_rows.append((f"texts {i}: {len(batch)}", batch, want, got))
        one = case(f"{len(batch)} text(s)", {name: got}, len(batch))
        reference = keras_text_outputs(part, batch)
        if recorded:
            reference += keras_outputs(numeric, {name: want})[count:]
        references[id(one.feed)] = reference
        cases.append(one)
    report = compare(lambda feed: references[id(feed)], session, cases, atol=atol, rtol=rtol)
    report.inputs = f"{len(texts)} texts in batches of {', '.join(str(len(b)) for b in batches)}"
    report.structure_problems = problems
    tokens = _token_parity(row, f"{part.layer.name} tokens", token_rows)
    report.layers = [tokens] + [replace(o, name=n) for o, (n, _) in zip(report.outputs[count:], recorded)]
    report.outputs = report.outputs[:count]
    return report


def _token_parity(OutputParity, name: str, rows):
    worst, total, diff_sum, where = 0.0, 0, 0.0, ("", 0)
    for description, texts, want, got in rows:
        if want.shape != got.shape:
            return OutputParity(
                name,
                float("inf"),
                float("inf"),
                float("inf"),
                f"{description}: shape {got.shape} vs {want.shape}",
                0,
                0.0,
                0.0,
                False,
            )
        diff = np.abs(want - got)
        total += diff.size
        diff_sum += float(diff.sum())
        if diff.size and diff.max() > worst:
            worst = float(diff.max())
            sample = int(np.unravel_index(int(diff.argmax()), diff.shape)[0])
            where = (f"{texts[sample][:16]!r}", sample)
    if worst == 0:
        where = (f"{total:,} ids equal", 0)
    return OutputParity(
        name, worst, worst, diff_sum / max(1, total), where[0], where[1], 0.0, 0.0, worst == 0
    )
