"""Make the transformer fixtures of the speed work (issue 26) in common public shapes (run with the project's
.venv, Keras 3):

    .venv/bin/python scripts/make_edge_transformer_fixtures.py

Writes tests/fixtures/edge/<name>.keras and <name>.npz (fixed inputs and the Keras model's own outputs on them,
taken before saving: the independent reference of the tests). Each model is trained for two epochs on a toy
task, so the weights are not the initial ones.

- ``ts-block1``: a one-block post-norm time-series transformer (Dense embedding, MultiHeadAttention, residual,
  LayerNormalization, a ReLU feed-forward of two Dense layers, residual, LayerNormalization, mean over time,
  Dense head): the shape of Keras' "text classification with Transformer" block over sensor features.
- ``mha-conv4``: four pre-norm blocks of MultiHeadAttention and a Conv1D feed-forward (kernel size 1), as in
  Keras' "Timeseries classification with a Transformer model" example (LayerNormalization epsilon 1e-6,
  GlobalAveragePooling1D over channels, Dense ReLU head, softmax over two classes).
- ``k3-layernorm``: a Keras 3 token transformer in which LayerNormalization appears in each form Keras 3 writes
  (with scale and center, ``scale=False``, ``center=False``, both off, ``rms_scaling=True``) and a GELU
  feed-forward, over a free time axis.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "edge"


def ts_block1():
    import keras
    from keras import layers

    inp = keras.Input((24, 3), name="x")
    x = layers.Dense(16, name="embed")(inp)
    h = layers.MultiHeadAttention(2, 8, name="mha")(x, x)
    x = layers.LayerNormalization(epsilon=1e-6, name="norm1")(layers.Add(name="add1")([x, h]))
    h = layers.Dense(32, activation="relu", name="ff1")(x)
    h = layers.Dense(16, name="ff2")(h)
    x = layers.LayerNormalization(epsilon=1e-6, name="norm2")(layers.Add(name="add2")([x, h]))
    x = layers.GlobalAveragePooling1D(name="pool")(x)
    return keras.Model(inp, layers.Dense(1, name="head")(x), name="ts_block1")


def mha_conv4():
    import keras
    from keras import layers

    inp = keras.Input((64, 1), name="x")
    x = inp
    for k in range(1, 5):
        h = layers.LayerNormalization(epsilon=1e-6, name=f"block{k}_norm1")(x)
        h = layers.MultiHeadAttention(4, 32, dropout=0.1, name=f"block{k}_mha")(h, h)
        h = layers.Dropout(0.1)(h)
        res = layers.Add(name=f"block{k}_add1")([h, x])
        h = layers.LayerNormalization(epsilon=1e-6, name=f"block{k}_norm2")(res)
        h = layers.Conv1D(4, 1, activation="relu", name=f"block{k}_conv1")(h)
        h = layers.Dropout(0.1)(h)
        h = layers.Conv1D(1, 1, name=f"block{k}_conv2")(h)
        x = layers.Add(name=f"block{k}_add2")([h, res])
    x = layers.GlobalAveragePooling1D(data_format="channels_first", name="pool")(x)
    x = layers.Dense(128, activation="relu", name="mlp")(x)
    x = layers.Dropout(0.2)(x)
    return keras.Model(inp, layers.Dense(2, activation="softmax", name="head")(x), name="mha_conv4")


def k3_layernorm():
    import keras
    from keras import layers

    inp = keras.Input((None,), dtype="int32", name="tokens")
    x = layers.Embedding(200, 32, name="embed")(inp)
    x = layers.LayerNormalization(name="norm_full")(x)
    forms = [
        dict(scale=False, name="norm_noscale"),
        dict(center=False, name="norm_nocenter"),
        dict(scale=False, center=False, epsilon=1e-5, name="norm_bare"),
        dict(rms_scaling=True, name="norm_rms"),
    ]
    for k, form in enumerate(forms, 1):
        h = layers.MultiHeadAttention(4, 8, name=f"block{k}_mha")(x, x)
        x = layers.LayerNormalization(name=f"block{k}_norm1")(layers.Add()([x, h]))
        h = layers.Dense(64, activation="gelu", name=f"block{k}_ff1")(x)
        h = layers.Dense(32, name=f"block{k}_ff2")(h)
        x = layers.LayerNormalization(**form)(layers.Add()([x, h]))
    x = layers.GlobalAveragePooling1D(name="pool")(x)
    return keras.Model(inp, layers.Dense(3, activation="softmax", name="head")(x), name="k3_layernorm")


MODELS = {"ts-block1": ts_block1, "mha-conv4": mha_conv4, "k3-layernorm": k3_layernorm}


def main() -> None:
    import keras
    import numpy as np

    OUT.mkdir(parents=True, exist_ok=True)
    for seed, (name, build) in enumerate(MODELS.items(), 1):
        keras.utils.set_random_seed(seed)
        rng = np.random.default_rng(seed)
        model = build()
        spec = model.inputs[0]
        if spec.dtype.startswith("int"):
            x = rng.integers(0, 200, (256, 16)).astype("int32")
            y = keras.utils.to_categorical(x[:, :4].sum(axis=1) % 3, 3)
            probe = np.random.default_rng(11).integers(0, 200, (6, 16)).astype("int32")
        else:
            x = rng.uniform(-1, 1, (256, *spec.shape[1:])).astype("float32")
            target = x.max(axis=(1, 2))
            outputs = model.outputs[0].shape[-1]
            y = keras.utils.to_categorical(target > 0.9, 2) if outputs == 2 else target[:, None]
            probe = np.random.default_rng(11).uniform(-1, 1, (6, *spec.shape[1:])).astype("float32")
        loss = "categorical_crossentropy" if y.shape[-1] > 1 else "mse"
        model.compile(keras.optimizers.Adam(1e-3), loss)
        model.fit(x, y, epochs=2, batch_size=32, verbose=0)
        trained, model = model, build()  # the same weights without the optimizer's state (a smaller file)
        model.set_weights(trained.get_weights())
        np.savez(OUT / f"{name}.npz", x=probe, y=np.asarray(model(probe, training=False)))
        path = OUT / f"{name}.keras"
        model.save(path)
        print(f"wrote {path} ({path.stat().st_size:,} bytes, {model.count_params():,} parameters)")


if __name__ == "__main__":
    main()
