"""Make the Keras 3 streaming fixtures of issue 28 (run with the project's .venv, Keras 3):

    .venv/bin/python scripts/make_stream_fixtures.py

Writes tests/fixtures/stream/<name>.keras and <name>.npz. Each model is trained for two epochs on a toy task
(so the weights are not the initial ones); the stateful one is trained as a stateless twin of the same layers
and the weights copied in. The ``.npz`` holds Keras's own outputs, taken before saving (the independent
reference of the tests):

- ``x``: seeded float32 inputs, batch 2, 200 steps;
- ``full``: the outputs on the whole 200-step sequence from zero state;
- ``steps``: a step-by-step reference, shape (2, 200, ...). For the stateful model, the stateful Keras model
  called on one step at a time (``x[:, t:t+1]``, states reset once first), each step's output stacked. For the
  causal models, which Keras cannot run one step at a time, ``steps[:, t]`` is the output at the last position
  of the model run on the prefix ``x[:, :t+1]`` (200 separate calls);
- ``chunks`` (stateful model only): the outputs of feeding ``x`` in 4 chunks of ``chunk`` = 50 steps with the
  state carried over (reset once), stacked on axis 1: shape (2, 4, ...);
- ``keras_version``.

Models:

- ``k3-stateful-lstm``: ``Input(batch_shape=(2, None, 4))``, ``LSTM(16, stateful=True, return_sequences=True)``,
  ``LSTM(8, stateful=True)`` (many-to-one), ``Dense(2)``.
- ``causal-lstm-mha``: ``LSTM(16)`` -> ``MultiHeadAttention(2, 8)`` with ``use_causal_mask=True`` -> residual
  ``Add`` -> ``LayerNormalization`` -> ``Dense(1)`` at every step.
- ``causal-conv-gru``: ``Conv1D(8, 3, padding="causal", dilation_rate=2, relu)`` -> ``GRU(16)`` ->
  ``TimeDistributed(Dense(1))``.
- ``causal-attention-gru``: ``GRU(12)`` -> Keras ``Attention`` with ``use_causal_mask=True`` -> ``Concatenate``
  -> ``Dense(1)`` at every step.
- ``lstm64-mha``: ``causal-lstm-mha`` at the shipped model's width: ``LSTM(64)``, ``MultiHeadAttention(4, 16)``.

The script checks (and prints) that the step references agree with the whole-sequence outputs.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "stream"
STEPS = 200
CHUNK = 50


def stateful_lstm(stateful: bool = True):
    import keras
    from keras import layers

    inp = keras.Input(batch_shape=(2, None, 4), name="x") if stateful else keras.Input((None, 4), name="x")
    h = layers.LSTM(16, stateful=stateful, return_sequences=True, name="lstm1")(inp)
    h = layers.LSTM(8, stateful=stateful, name="lstm2")(h)
    return keras.Model(inp, layers.Dense(2, name="head")(h), name="k3_stateful_lstm")


def causal_lstm_mha():
    import keras
    from keras import layers

    inp = keras.Input((None, 3), name="x")
    h = layers.LSTM(16, return_sequences=True, name="lstm")(inp)
    a = layers.MultiHeadAttention(num_heads=2, key_dim=8, name="mha")(h, h, use_causal_mask=True)
    h = layers.LayerNormalization(name="norm")(layers.Add(name="add")([h, a]))
    return keras.Model(inp, layers.Dense(1, name="head")(h), name="causal_lstm_mha")


def causal_conv_gru():
    import keras
    from keras import layers

    inp = keras.Input((None, 3), name="x")
    h = layers.Conv1D(8, 3, padding="causal", dilation_rate=2, activation="relu", name="conv1d")(inp)
    h = layers.GRU(16, return_sequences=True, name="gru")(h)
    return keras.Model(inp, layers.TimeDistributed(layers.Dense(1), name="head")(h), name="causal_conv_gru")


def causal_attention_gru():
    import keras
    from keras import layers

    inp = keras.Input((None, 3), name="x")
    g = layers.GRU(12, return_sequences=True, name="gru")(inp)
    a = layers.Attention(name="attention")([g, g], use_causal_mask=True)
    h = layers.Concatenate(name="concat")([g, a])
    return keras.Model(inp, layers.Dense(1, name="head")(h), name="causal_attention_gru")


def lstm64_mha():
    """The shipped model's LSTM width (64) with a causal MultiHeadAttention(4 heads of 16): a size users ship,
    for the step-against-window figures of ``bench --stream``."""
    import keras
    from keras import layers

    inp = keras.Input((None, 3), name="x")
    h = layers.LSTM(64, return_sequences=True, name="lstm")(inp)
    a = layers.MultiHeadAttention(num_heads=4, key_dim=16, name="mha")(h, h, use_causal_mask=True)
    h = layers.LayerNormalization(name="norm")(layers.Add(name="add")([h, a]))
    return keras.Model(inp, layers.Dense(1, name="head")(h), name="lstm64_mha")


CAUSAL = {
    "causal-lstm-mha": causal_lstm_mha,
    "causal-conv-gru": causal_conv_gru,
    "causal-attention-gru": causal_attention_gru,
    "lstm64-mha": lstm64_mha,
}


def _train(model, rng, features: int, outputs: int, sequence: bool) -> None:
    """Two epochs on a toy task: a running maximum of the first feature (per step or at the end)."""
    import keras
    import numpy as np

    x = rng.uniform(-1, 1, (128, 24, features)).astype("float32")
    y = np.maximum.accumulate(x[:, :, :1], axis=1)
    y = np.repeat(y, outputs, axis=-1)
    model.compile(keras.optimizers.Adam(3e-3), "mse")
    model.fit(x, y if sequence else y[:, -1], epochs=2, batch_size=16, verbose=0)


def _write(name: str, model, **arrays) -> None:
    import keras
    import numpy as np

    np.savez(OUT / f"{name}.npz", keras_version=np.asarray(keras.__version__), **arrays)
    path = OUT / f"{name}.keras"
    model.save(path)
    sizes = f"{path.stat().st_size:,} + {(OUT / f'{name}.npz').stat().st_size:,} bytes"
    print(f"wrote {path} and .npz ({sizes}, {model.count_params():,} parameters)", flush=True)


def _reset(model) -> None:
    for layer in model.layers:
        if getattr(layer, "stateful", False):
            layer.reset_state()


def make_stateful() -> None:
    import keras
    import numpy as np

    keras.utils.set_random_seed(1)
    twin = stateful_lstm(stateful=False)  # the same layers, stateless: trained with an ordinary fit
    _train(twin, np.random.default_rng(1), features=4, outputs=2, sequence=False)
    model = stateful_lstm()
    model.set_weights(twin.get_weights())
    x = np.random.default_rng(11).uniform(-1, 1, (2, STEPS, 4)).astype("float32")

    _reset(model)
    full = np.asarray(model(x))
    _reset(model)
    steps = np.stack([np.asarray(model(x[:, t : t + 1])) for t in range(STEPS)], axis=1)
    _reset(model)
    chunks = np.stack([np.asarray(model(x[:, k : k + CHUNK])) for k in range(0, STEPS, CHUNK)], axis=1)
    _reset(model)

    print("k3-stateful-lstm: full", full.shape, "steps", steps.shape, "chunks", chunks.shape)
    err = float(np.abs(steps[:, -1] - full).max())
    print(f"  max|steps[:, -1] - full| = {err:.3g}")
    assert err < 1e-5, err
    err = float(np.abs(chunks[:, -1] - full).max())
    print(f"  max|chunks[:, -1] - full| = {err:.3g}")
    assert err < 1e-5, err
    err = float(np.abs(chunks - steps[:, CHUNK - 1 :: CHUNK]).max())
    print(f"  max|chunks[:, k] - steps[:, 50k+49]| = {err:.3g}")
    assert err < 1e-5, err
    stateless_full = np.asarray(twin(x))
    err = float(np.abs(stateless_full - full).max())
    print(f"  max|stateless twin - full| = {err:.3g}")
    assert err < 1e-5, err
    spread = float(np.abs(steps - steps[:, -1:]).max())
    print(f"  output varies over steps by up to {spread:.3g} (the state matters)")
    _write("k3-stateful-lstm", model, x=x, full=full, steps=steps, chunks=chunks, chunk=np.asarray(CHUNK))


def make_causal(seed: int, name: str, build) -> None:
    import keras
    import numpy as np

    keras.utils.set_random_seed(seed)
    trained = build()
    _train(trained, np.random.default_rng(seed), features=3, outputs=1, sequence=True)
    model = build()  # the same weights without the optimizer's state (a smaller file)
    model.set_weights(trained.get_weights())
    x = np.random.default_rng(10 + seed).uniform(-1, 1, (2, STEPS, 3)).astype("float32")
    full = np.asarray(model(x, training=False))
    steps = np.stack([np.asarray(model(x[:, : t + 1], training=False))[:, -1] for t in range(STEPS)], axis=1)
    err = float(np.abs(steps - full).max())
    worst = int(np.abs(steps - full).reshape(2, STEPS, -1).max(axis=(0, 2)).argmax())
    print(f"{name}: full {full.shape}, steps {steps.shape}")
    print(f"  max over t of |steps[:, t] - full[:, t]| = {err:.3g} (worst t = {worst})")
    assert err < 1e-4, err
    _write(name, model, x=x, full=full, steps=steps)


def main() -> None:
    import warnings

    # Keras warns that a softmax over a prefix of length 1 is always 1: true, and what the step-0 prefix means.
    warnings.filterwarnings("ignore", message="You are using a softmax over axis -1")
    OUT.mkdir(parents=True, exist_ok=True)
    make_stateful()
    for seed, (name, build) in enumerate(CAUSAL.items(), 2):
        make_causal(seed, name, build)


if __name__ == "__main__":
    main()
