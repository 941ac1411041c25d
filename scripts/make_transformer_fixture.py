"""Make tests/fixtures/transformer/deep5.keras (run with the project's .venv, Keras 3):

    .venv/bin/python scripts/make_transformer_fixture.py

A 5-block pre-norm transformer over a free time axis with the shape of problem a real one showed (issue 25,
item 7): a residual stream of magnitude ~10^3-10^4 (``TokenProjection``'s gain, each block's ``FeedForward``
gain), MultiHeadAttention, and the author's own layers (``deep_layers.py`` beside it: TokenProjection, RMSNorm,
FeedForward). Each block is ``block{k}_norm1`` (RMSNorm, the block's first layer) -> ``block{k}_mha`` -> add ->
``block{k}_norm2`` -> ``block{k}_ffn`` -> add; the head is RMSNorm -> mean over time -> Dense(1), so the output
is O(1) while the stream is large. ``deep5.npz`` holds fixed inputs and the Keras model's own
outputs on them (before saving): the independent reference of the tests. Trained for two epochs on a toy
task so the weights are not the initial ones.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "transformer"
BLOCKS = 5
WIDTH = 32
FEATURES = 4


def build():
    import keras

    sys.path.insert(0, str(OUT))
    from deep_layers import FeedForward, RMSNorm, TokenProjection

    inp = keras.Input((None, FEATURES), name="x")
    x = TokenProjection(WIDTH, 400.0, name="projection")(inp)
    for k in range(1, BLOCKS + 1):
        h = RMSNorm(name=f"block{k}_norm1")(x)
        h = keras.layers.MultiHeadAttention(4, WIDTH // 4, name=f"block{k}_mha")(h, h)
        x = keras.layers.Add(name=f"block{k}_add1")([x, h])
        h = RMSNorm(name=f"block{k}_norm2")(x)
        h = FeedForward(64, 30.0 * k, name=f"block{k}_ffn")(h)
        x = keras.layers.Add(name=f"block{k}_add2")([x, h])
    x = RMSNorm(name="final_norm")(x)
    x = keras.layers.GlobalAveragePooling1D(name="pool")(x)
    out = keras.layers.Dense(1, name="head")(x)
    return keras.Model(inp, out, name="deep5")


def main() -> None:
    import keras
    import numpy as np

    keras.utils.set_random_seed(5)
    rng = np.random.default_rng(5)
    x = rng.uniform(-1, 1, (256, 12, FEATURES)).astype("float32")
    y = x.max(axis=(1, 2))[:, None]
    model = build()
    model.compile(keras.optimizers.Adam(1e-3), "mse")
    model.fit(x, y, epochs=2, batch_size=32, verbose=0)
    trained, model = model, build()  # the same weights without the optimizer's state (a smaller file)
    model.set_weights(trained.get_weights())
    probe = np.random.default_rng(11).uniform(-1, 1, (6, 12, FEATURES)).astype("float32")
    np.savez(OUT / "deep5.npz", x=probe, y=np.asarray(model(probe)))
    path = OUT / "deep5.keras"
    model.save(path)
    print(f"wrote {path} ({path.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
