"""What the Keras 2 CuDNN fixtures compute, in NumPy, from the weights in the .h5 file and the cuDNN equations.

Independent of Keras and of edgeattn's converter: TF 2.15's CuDNNLSTM/CuDNNGRU hand each stored gate block
(input, units) to cuDNN untransposed (``canonical_to_params`` without ``transpose_weights``), so cuDNN reads
the block's buffer as its row-major (units, input) matrix W and computes ``W x``. cuDNN keeps an input and a
recurrent bias per gate. LSTM gates i, f, c, o; GRU gates as stored z, r, h with
``h~ = tanh(W_h x + b_Wh + r * (R_h h + b_Rh))`` and ``h' = (1 - z) h~ + z h``.
"""

from __future__ import annotations

import h5py
import numpy as np


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def stored(path, layer: str) -> list[np.ndarray]:
    """A layer's stored arrays, in the order Keras 2 wrote them (``dense*``: the model's one Dense layer)."""
    with h5py.File(path, "r") as f:
        if layer.endswith("*"):
            (layer,) = [name for name in f["model_weights"] if name.startswith(layer[:-1])]
        group = f["model_weights"][layer]
        names = [n.decode() if hasattr(n, "decode") else n for n in group.attrs["weight_names"]]
        return [np.asarray(group[n][()], np.float64) for n in names]


def _blocks(kernel, gates):
    inputs = kernel.shape[0]
    units = kernel.shape[1] // gates
    return [block.reshape(units, inputs) for block in np.hsplit(kernel, gates)]  # cuDNN's row-major reading


def lstm(x, kernel, recurrent, bias, go_backwards=False):
    """CuDNNLSTM over x (batch, time, input): all hidden states (batch, time, units)."""
    W, R = _blocks(kernel, 4), _blocks(recurrent, 4)
    bw, br = np.split(bias, 2)
    bw, br = np.split(bw, 4), np.split(br, 4)
    units = R[0].shape[0]
    h = np.zeros((x.shape[0], units))
    c = np.zeros_like(h)
    steps = range(x.shape[1])[::-1] if go_backwards else range(x.shape[1])
    states = []
    for t in steps:
        g = [x[:, t] @ W[k].T + bw[k] + h @ R[k].T + br[k] for k in range(4)]
        i, f, cc, o = _sigmoid(g[0]), _sigmoid(g[1]), np.tanh(g[2]), _sigmoid(g[3])
        c = f * c + i * cc
        h = o * np.tanh(c)
        states.append(h)
    return np.stack(states, axis=1)


def gru(x, kernel, recurrent, bias, go_backwards=False):
    """CuDNNGRU over x (batch, time, input): all hidden states (batch, time, units), in processing order."""
    W, R = _blocks(kernel, 3), _blocks(recurrent, 3)
    bw, br = np.split(bias, 2)
    bw, br = np.split(bw, 3), np.split(br, 3)
    units = R[0].shape[0]
    h = np.zeros((x.shape[0], units))
    steps = range(x.shape[1])[::-1] if go_backwards else range(x.shape[1])
    states = []
    for t in steps:
        xt = x[:, t]
        z = _sigmoid(xt @ W[0].T + bw[0] + h @ R[0].T + br[0])
        r = _sigmoid(xt @ W[1].T + bw[1] + h @ R[1].T + br[1])
        hh = np.tanh(xt @ W[2].T + bw[2] + r * (h @ R[2].T + br[2]))
        h = (1.0 - z) * hh + z * h
        states.append(h)
    return np.stack(states, axis=1)


def _softmax(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def cudnn_lstm_model(path, x):
    """k2-cudnn-lstm: CuDNNLSTM(16, return_sequences) -> Attention()([h, h]) (dot) -> mean over time -> Dense(1)."""
    h = lstm(x, *stored(path, "cudnn_lstm"))
    context = _softmax(h @ h.transpose(0, 2, 1)) @ h
    kernel, bias = stored(path, "dense*")
    return context.mean(axis=1) @ kernel + bias


def cudnn_gru_model(path, x):
    """k2-cudnn-gru: Bidirectional(CuDNNGRU(8, return_sequences)) -> CuDNNGRU(6, go_backwards) -> Dense(2)."""
    weights = stored(path, "bi_cudnn_gru")
    forward = gru(x, *weights[:3])
    backward = gru(x, *weights[3:], go_backwards=True)[:, ::-1]  # Keras aligns the backward states in time
    h = np.concatenate([forward, backward], axis=-1)
    last = gru(h, *stored(path, "cudnn_gru"), go_backwards=True)[:, -1]
    kernel, bias = stored(path, "dense*")
    return last @ kernel + bias
