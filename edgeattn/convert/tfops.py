"""The TensorFlow functions that a Keras 2 ``TFOpLambda`` / ``SlicingOpLambda`` layer may name, rebuilt as Keras
ops.

Keras 2.4+ records ``tf.nn.softmax(x, axis=1)`` applied to a Keras tensor as a layer that stores the function's
API name (``"nn.softmax"``) and its call arguments: data, not code. edgeattn maps each allowed name to a
function of the same signature (TensorFlow's parameter names) written with ``keras.ops``. A name outside this
table is refused by name. Nothing here imports Keras: the caller passes ``keras.ops`` in.
"""

from __future__ import annotations

import math

SQRT_HALF = math.sqrt(0.5)
SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def _unary(op_name: str):
    def fn(ops, x, name=None):
        return getattr(ops, op_name)(x)

    return fn


def _features(op_name: str):
    def fn(ops, features, name=None):
        return getattr(ops, op_name)(features)

    return fn


def _binary(op_name: str):
    def fn(ops, x, y, name=None):
        return getattr(ops, op_name)(x, y)

    return fn


def _reduce(op_name: str):
    def fn(ops, input_tensor, axis=None, keepdims=False, name=None, reduction_indices=None, keep_dims=None):
        axis = reduction_indices if axis is None else axis
        keepdims = bool(keep_dims) if keep_dims is not None else bool(keepdims)
        return getattr(ops, op_name)(input_tensor, axis=_axis(axis), keepdims=keepdims)

    return fn


def _axis(axis):
    return tuple(axis) if isinstance(axis, list) else axis


def gelu(ops, features, approximate=False, name=None):
    """GELU with the operators ONNX has (``Erf`` or ``Tanh``); TF's exact form uses ``Erfc``, which tf2onnx
    cannot convert."""
    x = features
    if approximate:
        return 0.5 * x * (1.0 + ops.tanh(SQRT_2_OVER_PI * (x + 0.044715 * x * x * x)))
    return 0.5 * x * (1.0 + ops.erf(x * SQRT_HALF))


def _softmax(ops, logits, axis=None, name=None, dim=None):
    return ops.softmax(
        logits, axis=-1 if axis is None and dim is None else (axis if axis is not None else dim)
    )


def _log_softmax(ops, logits, axis=None, name=None, dim=None):
    return ops.log_softmax(
        logits, axis=-1 if axis is None and dim is None else (axis if axis is not None else dim)
    )


def _leaky_relu(ops, features, alpha=0.2, name=None):
    return ops.leaky_relu(features, negative_slope=alpha)


def _silu(ops, features, beta=1.0, name=None):
    return features * ops.sigmoid(beta * features)


def _squared_difference(ops, x, y, name=None):
    return ops.square(ops.subtract(x, y))


def _expand_dims(ops, input, axis=None, name=None, dim=None):
    return ops.expand_dims(input, axis if axis is not None else dim)


def _squeeze(ops, input, axis=None, name=None, squeeze_dims=None):
    axis = squeeze_dims if axis is None else axis
    return ops.squeeze(input, axis=_axis(axis))


def _reshape(ops, tensor, shape, name=None):
    return ops.reshape(tensor, tuple(shape))


def _transpose(ops, a, perm=None, name="transpose", conjugate=False):
    return ops.transpose(a, axes=None if perm is None else tuple(perm))


def _concat(ops, values, axis, name="concat"):
    return ops.concatenate(list(values), axis=axis)


def _stack(ops, values, axis=0, name="stack"):
    return ops.stack(list(values), axis=axis)


def _matmul(ops, a, b, transpose_a=False, transpose_b=False, adjoint_a=False, adjoint_b=False, **_ignored):
    if transpose_a or adjoint_a:
        a = ops.swapaxes(a, -1, -2)
    if transpose_b or adjoint_b:
        b = ops.swapaxes(b, -1, -2)
    return ops.matmul(a, b)


def _l2_normalize(ops, x, axis=None, epsilon=1e-12, name=None, dim=None):
    axis = _axis(dim if axis is None else axis)
    square_sum = ops.sum(ops.square(x), axis=axis, keepdims=True)
    return x * ops.rsqrt(ops.maximum(square_sum, epsilon))


def _clip(ops, t, clip_value_min, clip_value_max, name=None):
    return ops.clip(t, clip_value_min, clip_value_max)


def _getitem(ops, tensor, slice_spec, var=None):
    return tensor[decode_slices(slice_spec)]


def decode_slices(spec):
    """Keras 2's JSON form of an index (``{"start", "stop", "step"}`` dicts for slices) as a Python index."""

    def one(item):
        if isinstance(item, dict) and set(item) == {"start", "stop", "step"}:
            return slice(item["start"], item["stop"], item["step"])
        if isinstance(item, dict) and item.get("class_name") == "__ellipsis__":
            return Ellipsis
        return item

    return tuple(one(item) for item in spec) if isinstance(spec, list) else one(spec)


UNARY = {
    "math.tanh": "tanh", "math.sigmoid": "sigmoid", "math.exp": "exp", "math.log": "log", "math.sqrt": "sqrt",
    "math.rsqrt": "rsqrt", "math.square": "square", "math.abs": "abs", "math.negative": "negative",
    "math.sin": "sin", "math.cos": "cos", "math.erf": "erf", "math.sign": "sign", "math.floor": "floor",
    "math.ceil": "ceil", "math.reciprocal": "reciprocal", "math.log_sigmoid": "log_sigmoid",
    "math.softplus": "softplus", "__operators__.neg": "negative",
}  # fmt: skip
FEATURES = {
    "nn.relu": "relu", "nn.relu6": "relu6", "nn.elu": "elu", "nn.selu": "selu", "nn.softplus": "softplus",
    "nn.softsign": "softsign", "math.softsign": "softsign",
}  # fmt: skip
BINARY = {
    "__operators__.add": "add", "math.add": "add", "math.subtract": "subtract",
    "math.multiply": "multiply", "math.truediv": "true_divide", "math.divide": "true_divide",
    "math.maximum": "maximum", "math.minimum": "minimum", "math.pow": "power",
}  # fmt: skip
REDUCTIONS = {
    "math.reduce_sum": "sum", "math.reduce_mean": "mean", "math.reduce_max": "max", "math.reduce_min": "min",
    "math.reduce_prod": "prod", "math.reduce_logsumexp": "logsumexp",
}  # fmt: skip

OPS = {
    **{name: _unary(op) for name, op in UNARY.items()},
    **{name: _features(op) for name, op in FEATURES.items()},
    **{name: _binary(op) for name, op in BINARY.items()},
    **{name: _reduce(op) for name, op in REDUCTIONS.items()},
    "nn.softmax": _softmax,
    "nn.log_softmax": _log_softmax,
    "nn.gelu": gelu,
    "nn.leaky_relu": _leaky_relu,
    "nn.silu": _silu,
    "math.squared_difference": _squared_difference,
    "expand_dims": _expand_dims,
    "compat.v1.expand_dims": _expand_dims,
    "squeeze": _squeeze,
    "compat.v1.squeeze": _squeeze,
    "reshape": _reshape,
    "transpose": _transpose,
    "compat.v1.transpose": _transpose,
    "concat": _concat,
    "stack": _stack,
    "linalg.matmul": _matmul,
    "math.l2_normalize": _l2_normalize,
    "linalg.l2_normalize": _l2_normalize,
    "nn.l2_normalize": _l2_normalize,
    "clip_by_value": _clip,
    "__operators__.getitem": _getitem,
}


def known(function: str) -> bool:
    return function in OPS


def apply(ops, function: str, args: list, kwargs: dict):
    """Run the allowed function ``function`` (a recorded TF API name) with ``keras.ops``."""
    return OPS[function](ops, *args, **kwargs)
