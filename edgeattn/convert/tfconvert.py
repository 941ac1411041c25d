"""The tf2onnx conversion: a Keras model (``convert``) or a SavedModel's serving signature (``convert_signature``)
to a raw ONNX model, before export's clean-up and checks (``edgeattn.convert.export``).

Both take the batch axis free and refuse, in one error, the TensorFlow ops that tf2onnx has no ONNX form for
(collected from tf2onnx's log instead of printed; for a Keras model each names the layer that uses it). While a
Keras model converts, ``tf.nn.gelu`` computes the exact GELU with ``Erf`` (``_standard_gelu``). Constants that a
traced function captured become initializers (``_freeze_captures``), and an opset above tf2onnx's highest is
reached with onnx's version converter (``upgraded``).
"""

from __future__ import annotations

import contextlib
import logging
import re

import numpy as np
import onnx

from edgeattn.convert import kerasmodel
from edgeattn.core import defaults
from edgeattn.core.errors import UnsupportedModelError, require
from edgeattn.graphs import graph


def convert(keras_model, opset: int = defaults.OPSET, like=None) -> onnx.ModelProto:
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
    from edgeattn.convert import tfops

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
