"""Keras layers converted as the fewest kernels: stand-ins that compute the same thing in fewer ONNX nodes.

``MultiHeadAttention``: one product for the projections. Converted as it is, a Keras ``MultiHeadAttention`` becomes about forty ONNX nodes: three separate projections
(each a ``MatMul``, a ``Reshape`` and a bias ``Add``), a separate score scale, and two einsums that tf2onnx
writes as chains of ``Unsqueeze``/``Transpose``/``Reshape``/``Squeeze`` around each product. At batch 1 each
kernel costs onnxruntime about half a microsecond whatever its size, so the count is the cost.

edgeattn converts a stand-in that computes the same thing in twelve kernels::

    qkv = x @ [Wq/sqrt(d) | Wk | Wv] + [bq/sqrt(d) | bk | bv]     one MatMul, one Add
    qkv -> (batch, time, 3, heads, d) -> (3, batch, heads, time, d)  one Reshape, one Transpose (head split)
    q, k, v = split(qkv)                                             one Split
    out = softmax(q @ k^T) @ v                                       MatMul (onnxruntime fuses k's transpose),
                                                                     Softmax, MatMul
    out -> (batch, time, 1, heads, d) -> (batch, time, heads * d)    one Transpose, one Reshape (head merge)
    out @ Wo + bo                                                    MatMul, Add

The score scale ``1/sqrt(key_dim)`` is folded into the query's weights and bias. For cross-attention (the
value is another tensor than the query), the query is projected alone and the key and value together.

Where the stand-in does not apply it calls the original layer, so the conversion is what it was: a subclass
of ``MultiHeadAttention``, masks (an ``attention_mask``, ``use_causal_mask``, Keras masks on the inputs),
``return_attention_scores``, a separate ``key`` tensor, other ``attention_axes``, gates, sliding windows,
inputs of another rank than 3, or a ``value_dim`` different from ``key_dim``. Each stand-in is adopted only
when it gives the original layer's outputs on seeded inputs (within 1e-5 of their scale); after that, the
export's parity check compares the whole converted graph with the original model, as for every export.

``Conv1D`` with a kernel of size 1 (the feed-forward of many time-series transformers): a product on the last
axis and the bias, where tf2onnx writes ``Unsqueeze``, ``Reshape``/``Transpose``, ``Conv``, ``Squeeze`` and
more around each convolution. Only for ``channels_last``, stride 1, one group; adopted on the same check.
"""

from __future__ import annotations

import functools

import numpy as np

TOLERANCE = 1e-5


def stand_in(layer):
    """A stand-in for ``layer`` (a Keras ``MultiHeadAttention``, a pointwise ``Conv1D``), or ``layer`` itself
    where none applies or the stand-in does not give its outputs."""
    import keras

    if getattr(layer, "compute_dtype", "float32") != "float32":
        return layer  # the stand-ins compute in float32 (mixed precision keeps the original layer)
    if type(layer) is keras.layers.Conv1D and _pointwise(layer):
        cheaper = _pointwise_class()(layer)
        return cheaper if _same_outputs(layer, cheaper) else layer
    if type(layer) is not keras.layers.MultiHeadAttention or not _plain(layer):
        return layer
    try:
        packed = _packed_class()(layer)
    except (ValueError, AttributeError):  # a layout of weights this stand-in does not know
        return layer
    return packed if _same_outputs(layer, packed) else layer


def _pointwise(layer) -> bool:
    return (
        layer.built
        and tuple(layer.kernel_size) == (1,)
        and tuple(layer.strides) == (1,)
        and layer.groups == 1
        and layer.data_format == "channels_last"
        and len(layer.kernel.shape) == 3
    )


@functools.cache
def _pointwise_class():
    """The stand-in class of a pointwise ``Conv1D`` (made once, when Keras is imported)."""
    import keras

    class Pointwise(keras.layers.Layer):
        def __init__(self, original):
            super().__init__(name=original.name, dtype=original.dtype_policy)
            self.original = original
            self.kernel = np.asarray(original.kernel.numpy(), np.float32)[0]
            self.bias = None if original.bias is None else np.asarray(original.bias.numpy(), np.float32)

        def call(self, inputs):
            if len(inputs.shape) != 3:
                return self.original(inputs)
            y = _matmul(inputs, self.kernel)
            y = y + keras.ops.convert_to_tensor(self.bias) if self.bias is not None else y
            return self.original.activation(y)

        def compute_output_spec(self, inputs):
            return self.original.compute_output_spec(inputs)

    return Pointwise


def _plain(layer) -> bool:
    """Whether ``layer`` is built and computes plain attention over axis 1 of rank-3 tensors."""
    if not layer.built or getattr(layer, "_use_gate", False) or getattr(layer, "_sliding_window", None):
        return False
    axes = layer._attention_axes
    if axes is not None and tuple(a % 3 for a in axes) != (1,):
        return False
    kernels = [layer._query_dense.kernel, layer._key_dense.kernel, layer._value_dense.kernel]
    return (
        all(len(k.shape) == 3 for k in kernels)
        and len(layer._output_dense.kernel.shape) == 3
        and kernels[0].shape[1:] == kernels[1].shape[1:] == kernels[2].shape[1:]
        and kernels[1].shape == kernels[2].shape  # the key and the value read the same tensor
    )


def _weights(dense, heads: int, size: int, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray | None]:
    kernel = np.asarray(dense.kernel.numpy(), np.float32)
    kernel = kernel.reshape(kernel.shape[0], heads * size) * np.float32(scale)
    bias = None
    if dense.bias is not None:
        bias = np.asarray(dense.bias.numpy(), np.float32).reshape(heads * size) * np.float32(scale)
    return kernel, bias


def _joined(parts: list[tuple[np.ndarray, np.ndarray | None]]) -> tuple[np.ndarray, np.ndarray | None]:
    kernel = np.concatenate([k for k, _ in parts], axis=1)
    if all(b is None for _, b in parts):
        return kernel, None
    return kernel, np.concatenate(
        [b if b is not None else np.zeros(k.shape[1], np.float32) for k, b in parts]
    )


def _matmul(x, weight: np.ndarray):
    """``x @ weight`` on the last axis of ``x`` as one broadcasting product (Keras' own ``ops.matmul`` takes a
    rank-3 by rank-2 product as a tensordot, which tf2onnx writes with a reshape on either side)."""
    import tensorflow as tf

    return tf.linalg.matmul(x, tf.constant(weight))


@functools.cache
def _packed_class():
    """The stand-in layer class (made once, when Keras is imported)."""
    import keras
    from keras import ops

    class PackedAttention(keras.layers.Layer):
        def __init__(self, original):
            super().__init__(name=original.name, dtype=original.dtype_policy)
            self.original = original
            heads, size = original.num_heads, original.key_dim
            self.heads, self.size = heads, size
            scale = 1.0 / float(np.sqrt(float(size)))
            q = _weights(original._query_dense, heads, size, scale)
            k = _weights(original._key_dense, heads, size)
            v = _weights(original._value_dense, heads, size)
            self.q, self.kv = q, _joined([k, v])
            self.qkv = _joined([q, k, v]) if q[0].shape == k[0].shape else None  # self-attention possible
            out = original._output_dense
            self.wo = np.asarray(out.kernel.numpy(), np.float32).reshape(heads * size, -1)
            self.bo = None if out.bias is None else np.asarray(out.bias.numpy(), np.float32).reshape(-1)
            if self.bo is not None and self.bo.size != self.wo.shape[1]:
                raise ValueError("the output projection's bias does not match its kernel")

        def _project(self, x, weights, parts: int):
            kernel, bias = weights
            y = _matmul(x, kernel)
            if bias is not None:
                y = y + ops.convert_to_tensor(bias)
            shape = ops.shape(x)
            y = ops.reshape(y, (shape[0], shape[1], parts, self.heads, self.size))
            return ops.transpose(y, (2, 0, 3, 1, 4))  # (parts, batch, heads, time, size)

        def call(
            self,
            query,
            value,
            key=None,
            query_mask=None,
            value_mask=None,
            key_mask=None,
            attention_mask=None,
            return_attention_scores=False,
            training=None,
            use_causal_mask=False,
        ):
            masks = (
                query_mask,
                value_mask,
                key_mask,
                attention_mask,
                *(getattr(t, "_keras_mask", None) for t in (query, value)),
            )
            masked = any(m is not None for m in masks)
            if (
                masked
                or use_causal_mask
                or return_attention_scores
                or (key is not None and key is not value)
                or len(query.shape) != 3
                or len(value.shape) != 3
            ):
                return self.original(
                    query,
                    value,
                    key=key,
                    query_mask=query_mask,
                    value_mask=value_mask,
                    key_mask=key_mask,
                    attention_mask=attention_mask,
                    return_attention_scores=return_attention_scores,
                    training=training,
                    use_causal_mask=use_causal_mask,
                )
            if value is query and self.qkv is not None:
                q, k, v = ops.split(self._project(query, self.qkv, 3), 3, axis=0)
            else:
                q = self._project(query, self.q, 1)
                k, v = ops.split(self._project(value, self.kv, 2), 2, axis=0)
            scores = ops.softmax(ops.matmul(q, ops.swapaxes(k, -1, -2)), axis=-1)
            out = ops.transpose(ops.matmul(scores, v), (1, 3, 0, 2, 4))  # (batch, time, 1, heads, size)
            shape = ops.shape(query)
            out = _matmul(ops.reshape(out, (shape[0], shape[1], self.heads * self.size)), self.wo)
            return out + ops.convert_to_tensor(self.bo) if self.bo is not None else out

        def compute_output_spec(self, query, value, key=None, **kwargs):
            return self.original.compute_output_spec(query, value, key=key, **kwargs)

    return PackedAttention


def _same_outputs(original, packed) -> bool:
    """Whether the stand-in gives ``original``'s outputs on seeded inputs (for attention: self- and
    cross-attention)."""
    from keras import ops

    rng = np.random.default_rng(0)
    if not hasattr(original, "_query_dense"):  # a one-input layer
        try:
            x = ops.convert_to_tensor(
                rng.standard_normal((2, 5, int(original.kernel.shape[1]))).astype(np.float32)
            )
            return _close(np.asarray(original(x)), np.asarray(packed(x)))
        except Exception:  # any failure means: keep the original layer
            return False
    width, value_width = (int(d.kernel.shape[0]) for d in (original._query_dense, original._value_dense))
    x = ops.convert_to_tensor(rng.standard_normal((2, 5, width)).astype(np.float32))
    other = ops.convert_to_tensor(rng.standard_normal((2, 7, value_width)).astype(np.float32))
    cases = [(x, other)] + ([(x, x)] if width == value_width else [])
    try:
        for query, value in cases:
            if not _close(*(np.asarray(layer(query, value)) for layer in (original, packed))):
                return False
    except Exception:  # any failure means: keep the original layer
        return False
    return True


def _close(want: np.ndarray, got: np.ndarray) -> bool:
    scale = max(1.0, float(np.abs(want).max()))
    return got.shape == want.shape and float(np.abs(got - want).max()) <= TOLERANCE * scale
