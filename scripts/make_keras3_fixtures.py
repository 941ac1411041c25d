"""Make the Keras 3 fixtures of model files that record no inputs (run with the project's .venv, Keras 3):

    .venv/bin/python scripts/make_keras3_fixtures.py

tests/fixtures/keras3/k3-subclassed.h5: a subclassed Keras 3 model (``SensorModel``: LSTM -> the author's own
``AdditiveAttention``, which reuses the built-in name -> Dense) saved as ``.h5``, whose config records neither
inputs nor layers; its code is ``subclassed_layers.py`` beside it. ``k3-subclassed.npz`` holds fixed inputs and
the outputs of the trained model itself (before saving), the independent reference of the tests.

tests/fixtures/keras3/k3-user-named.h5: a functional model (LSTM -> the author's ``AdditiveAttention`` -> Dense)
whose config records the author's class under the bare built-in name ``AdditiveAttention`` (as Keras 2 files
do), so that only ``--custom-layers`` makes it the author's class; ``k3-user-named.npz`` as above.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "keras3"


def main() -> None:
    import keras
    import numpy as np

    sys.path.insert(0, str(OUT))
    from subclassed_layers import SensorModel

    keras.utils.set_random_seed(3)
    rng = np.random.default_rng(3)
    x = rng.uniform(-1, 1, (256, 12, 3)).astype("float32")
    y = x.max(axis=(1, 2))[:, None]
    model = SensorModel(16)
    model.compile("adam", "mse")
    model.fit(x, y, epochs=3, batch_size=32, verbose=0)
    probe = np.random.default_rng(11).uniform(-1, 1, (6, 12, 3)).astype("float32")
    np.savez(OUT / "k3-subclassed.npz", x=probe, y=np.asarray(model(probe)))
    model.save(OUT / "k3-subclassed.h5")
    print(f"wrote {OUT / 'k3-subclassed.h5'} ({(OUT / 'k3-subclassed.h5').stat().st_size:,} bytes)")

    import json

    import h5py
    from subclassed_layers import AdditiveAttention

    inp = keras.Input((12, 3))
    states = keras.layers.LSTM(8, return_sequences=True)(inp)
    model = keras.Model(inp, keras.layers.Dense(1)(AdditiveAttention(4, name="additive_attention")(states)))
    model.compile("adam", "mse")
    model.fit(x, y, epochs=3, batch_size=32, verbose=0)
    np.savez(OUT / "k3-user-named.npz", x=probe, y=np.asarray(model(probe)))
    path = OUT / "k3-user-named.h5"
    model.save(path)
    with h5py.File(path, "r+") as f:
        config = json.loads(f.attrs["model_config"])
        for layer in config["config"]["layers"]:
            if layer["class_name"].endswith(">AdditiveAttention"):
                layer["class_name"] = "AdditiveAttention"  # the bare built-in name
        f.attrs["model_config"] = json.dumps(config)
    print(f"wrote {path} ({path.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
