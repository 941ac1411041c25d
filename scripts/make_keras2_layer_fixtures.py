"""Make the Keras 2 fixtures of the layer kinds users bring: Keras' own attention layers, transformer parts,
CuDNN layers, TF-op layers and the user's own layer classes. Saved by the real old stack (TF 2.15, Keras 2).

    python3.11 scripts/make_keras2_layer_fixtures.py     # reuses ~/.cache/edgeattn-legacy-venv

The side venv is the one of ``make_legacy_fixtures.py``. Each model is trained for a few epochs on a small
synthetic task (CuDNN layers cannot run without a GPU: they get seeded random weights instead), saved as a
Keras 2 ``.h5``, and, except for the CuDNN ones, run by TF 2.15 on fixed inputs. The inputs and TF's outputs
are saved next to it as ``.npz`` (``x`` or ``x0, x1, ...``; ``y`` or ``y0, y1, ...``; for a free time axis
also ``xlong``/``ylong`` at another length). The CuDNN models' reference outputs are computed by the tests in
NumPy from the cuDNN equations and the weights in the file, independently of Keras.

The user's layer code is tests/fixtures/keras2/user_layers.py, the same file the tests hand to edgeattn.
Outputs go to tests/fixtures/keras2/. Never install this stack in CI: the files are committed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "keras2"


def outside() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from make_legacy_fixtures import side_python

    python = side_python()
    env = {**os.environ, "PYTHONPATH": str(OUT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    subprocess.run([str(python), __file__, "--inside"], check=True, env=env)


def inside() -> None:
    import numpy as np
    import tensorflow as tf
    import user_layers as U
    from tensorflow.keras import layers as L

    print(f"TF {tf.__version__}", flush=True)
    tf.keras.utils.set_random_seed(7)
    rng = np.random.default_rng(3)
    floats = rng.uniform(-1, 1, (256, 12, 3)).astype("float32")
    target = floats.max(axis=(1, 2))[:, None]
    tokens = rng.integers(1, 40, (256, 12)).astype("int32")
    token_target = (tokens.max(axis=1) / 40.0)[:, None].astype("float32")
    positions = np.tile(np.arange(12, dtype="int32"), (256, 1))
    probe_rng = np.random.default_rng(11)

    def probe(x, length=None):
        if isinstance(x, list):
            return [probe(part, length) for part in x]
        shape = (5, length or x.shape[1], *x.shape[2:])
        if x.dtype.kind == "i":
            return probe_rng.integers(1, int(x.max()) + 1, shape).astype(x.dtype)
        return probe_rng.uniform(-1, 1, shape).astype(x.dtype)

    def arrays(prefix, values):
        values = values if isinstance(values, list) else [values]
        if len(values) == 1:
            return {prefix: values[0]}
        return {f"{prefix}{i}": v for i, v in enumerate(values)}

    def save(name, model, x, y, epochs=3, free_time=False, reference=True):
        path = OUT / f"{name}.h5"
        if epochs:
            model.compile("adam", "mse")
            model.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
        model.save(path)
        data = {}
        p = probe(x)
        data.update(arrays("x", p))
        if reference:
            data.update(arrays("y", model.predict(p, verbose=0)))
        if free_time:
            p = probe(x, length=17)
            data.update(arrays("xlong", p))
            if reference:
                data.update(arrays("ylong", model.predict(p, verbose=0)))
        np.savez(OUT / f"{name}.npz", **data)
        print(f"  {path.name}: {path.stat().st_size:,} bytes", flush=True)

    OUT.mkdir(parents=True, exist_ok=True)

    # keras.layers.Attention: dot (causal), scaled dot, concat with [query, value, key] and dropout.
    inp = L.Input((None, 3))
    h = L.LSTM(16, return_sequences=True)(inp)
    q = L.Dense(16, name="query")(h)
    k = L.Dense(16, name="key")(h)
    a1 = L.Attention(name="dot_causal")([h, h], use_causal_mask=True)
    a2 = L.Attention(use_scale=True, name="scaled_dot")([q, h])
    a3 = L.Attention(score_mode="concat", dropout=0.1, name="concat")([q, h, k])
    x = L.GlobalAveragePooling1D()(L.Concatenate()([a1, a2, a3]))
    save("k2-attention", tf.keras.Model(inp, L.Dense(1)(x)), floats, target, free_time=True)

    # AdditiveAttention over a GRU, classification head.
    inp = L.Input((12, 3))
    h = L.GRU(12, return_sequences=True)(inp)
    x = L.GlobalMaxPooling1D()(L.AdditiveAttention(name="additive")([h, h]))
    save("k2-additive-attention", tf.keras.Model(inp, L.Dense(3, activation="softmax")(x)), floats,
         np.eye(3, dtype="float32")[floats[:, :, 0].argmax(axis=1) % 3])  # fmt: skip

    # MultiHeadAttention: self-attention with value_dim and output_shape, then cross-attention without bias.
    inp = L.Input((12, 3))
    h = L.Bidirectional(L.LSTM(8, return_sequences=True))(inp)
    s = L.MultiHeadAttention(num_heads=2, key_dim=4, value_dim=6, output_shape=10, name="self_mha")(h, h)
    q = L.Dense(8)(s)
    c = L.MultiHeadAttention(num_heads=3, key_dim=4, use_bias=False, name="cross_mha")(q, h, h)
    x = L.GlobalAveragePooling1D()(c)
    save("k2-mha-bilstm", tf.keras.Model(inp, L.Dense(1)(x)), floats, target)

    # A transformer encoder from built-ins: token + position Embeddings, Conv1D, MHA, Add, LayerNormalization,
    # Dense with exact gelu, pooling.
    tok = L.Input((12,), dtype="int32", name="tokens")
    pos = L.Input((12,), dtype="int32", name="positions")
    e = L.Add()([L.Embedding(40, 16)(tok), L.Embedding(12, 16)(pos)])
    c = L.Conv1D(16, 3, padding="same", activation="gelu")(e)
    a = L.MultiHeadAttention(num_heads=2, key_dim=8, name="mha")(c, c)
    x = L.LayerNormalization()(L.Add()([c, a]))
    f = L.Dense(16)(L.Dense(32, activation="gelu")(x))
    x = L.LayerNormalization()(L.Add()([x, f]))
    out = L.Dense(1)(L.GlobalAveragePooling1D()(x))
    save("k2-transformer", tf.keras.Model([tok, pos], out), [tokens, positions], token_target)

    # TF functions applied to Keras tensors (TFOpLambda / SlicingOpLambda), an attention written by hand.
    inp = L.Input((12, 3))
    h = L.LSTM(16, return_sequences=True)(inp)
    last = h[:, -1, :]
    score = tf.squeeze(L.Dense(1)(h), axis=-1)
    w = tf.nn.softmax(score, axis=1)
    ctx = tf.reduce_sum(h * tf.expand_dims(w, -1), axis=1)
    sim = tf.reshape(tf.matmul(tf.expand_dims(last, 1), h, transpose_b=True), (-1, 12))
    m = tf.concat([ctx, last, tf.math.tanh(sim), 1.0 - w], axis=-1)
    m = tf.reduce_mean(tf.stack([m + 1.0, 2.0 * m], axis=1), axis=1)
    m = tf.squeeze(tf.transpose(tf.expand_dims(m, -1), perm=[0, 2, 1]), axis=1)
    m = tf.nn.gelu(m, approximate=True) + tf.math.sqrt(tf.math.square(m) + 1.0) / 4.0
    save("k2-tfop", tf.keras.Model(inp, L.Dense(1)(m)), floats, target)

    # The user's own layers (user_layers.py): three attention styles over one LSTM.
    inp = L.Input((12, 3))
    h = L.LSTM(16, return_sequences=True)(inp)
    x = L.Concatenate()(
        [
            U.SimpleAttention(8, name="simple")(h),
            U.BahdanauAttention(8, name="bahdanau")(h),
            U.AttentionSum()(h),
        ]
    )
    save("k2-user-attention", tf.keras.Model(inp, L.Dense(1)(x)), floats, target)

    # The keras.io transformer, with a package-registered block and sinusoidal positions, free time axis.
    model = tf.keras.Sequential(
        [
            L.Input((None,), dtype="int32"),
            L.Embedding(40, 16),
            U.PositionalEncoding(64),
            U.TransformerBlock(16, 2, 32),
            L.GlobalAveragePooling1D(),
            L.Dense(1),
        ]
    )
    save("k2-user-transformer", model, tokens, token_target, free_time=True)

    # CuDNN layers (GPU-only kernels; saving needs no GPU). Weights: seeded random, biases included.
    inp = L.Input((12, 3))
    h = tf.compat.v1.keras.layers.CuDNNLSTM(16, return_sequences=True, name="cudnn_lstm")(inp)
    x = L.GlobalAveragePooling1D()(L.Attention(name="dot")([h, h]))
    model = tf.keras.Model(inp, L.Dense(1)(x))
    _random_weights(model, rng)
    save("k2-cudnn-lstm", model, floats, target, epochs=0, reference=False)

    inp = L.Input((12, 3))
    h = L.Bidirectional(tf.compat.v1.keras.layers.CuDNNGRU(8, return_sequences=True), name="bi_cudnn_gru")(
        inp
    )
    h = tf.compat.v1.keras.layers.CuDNNGRU(6, go_backwards=True, name="cudnn_gru")(h)
    model = tf.keras.Model(inp, L.Dense(2)(h))
    _random_weights(model, rng)
    save("k2-cudnn-gru", model, floats, target, epochs=0, reference=False)


def _random_weights(model, rng) -> None:
    model.set_weights([rng.uniform(-0.5, 0.5, w.shape).astype("float32") for w in model.get_weights()])


if __name__ == "__main__":
    inside() if "--inside" in sys.argv else outside()
