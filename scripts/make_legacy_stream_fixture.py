"""Make the Keras 2 stateful streaming fixture of issue 28 with the real old stack (TensorFlow 2.15.1):

    python3.11 scripts/make_legacy_stream_fixture.py      # runs itself inside ~/.cache/edgeattn-legacy-venv

The side virtual environment is the one of ``scripts/make_legacy_fixtures.py`` (tensorflow-cpu==2.15.1,
h5py<3.12, numpy<2; ``$EDGEATTN_LEGACY_VENV`` overrides its path); this script creates it the same way when it
is missing, or make it by hand with::

    python3.11 -m venv ~/.cache/edgeattn-legacy-venv
    ~/.cache/edgeattn-legacy-venv/bin/python -m pip install tensorflow-cpu==2.15.1 "h5py<3.12" "numpy<2"

It writes tests/fixtures/stream/tf215-stateful-lstm.h5: a tf.keras 2.15 ``Sequential`` with
``batch_input_shape=(2, None, 3)``, ``LSTM(16, stateful=True, return_sequences=True)`` and
``TimeDistributed(Dense(1))``, trained for two epochs on a toy task (as a stateless twin of the same layers,
whose weights are then copied in) and saved as Keras 2 ``.h5`` without the optimizer; and
``tf215-stateful-lstm.npz`` with TF 2.15's own outputs, the independent reference of the tests:

- ``x``: seeded float32 inputs, shape (2, 200, 3);
- ``full``: ``reset_states()``, then ``predict_on_batch(x)``: shape (2, 200, 1);
- ``steps``: ``reset_states()``, then ``predict_on_batch(x[:, t:t+1])`` for each t, stacked: (2, 200, 1);
- ``tf_version``.

Never install this stack in CI: the files are committed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_legacy_fixtures import side_python  # the one side venv, made one way

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "stream"
NAME = "tf215-stateful-lstm"
STEPS = 200


def outside() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    subprocess.run([str(side_python()), __file__, "--inside"], check=True, env=env)


def inside() -> None:
    import numpy as np
    import tensorflow as tf
    from tensorflow.keras import layers as L

    print(f"TF {tf.__version__}", flush=True)
    tf.keras.utils.set_random_seed(7)

    def build(stateful: bool):
        first = dict(batch_input_shape=(2, None, 3)) if stateful else dict(input_shape=(None, 3))
        return tf.keras.Sequential(
            [
                L.LSTM(16, stateful=stateful, return_sequences=True, name="lstm", **first),
                L.TimeDistributed(L.Dense(1), name="head"),
            ],
            name="tf215_stateful_lstm",
        )

    rng = np.random.default_rng(3)
    train_x = rng.uniform(-1, 1, (128, 24, 3)).astype("float32")
    train_y = np.maximum.accumulate(train_x[:, :, :1], axis=1)  # the running maximum of the first feature
    twin = build(stateful=False)
    twin.compile(tf.keras.optimizers.Adam(3e-3), "mse")
    twin.fit(train_x, train_y, epochs=2, batch_size=16, verbose=0)
    model = build(stateful=True)
    model.set_weights(twin.get_weights())

    x = np.random.default_rng(11).uniform(-1, 1, (2, STEPS, 3)).astype("float32")
    model.reset_states()
    full = np.asarray(model.predict_on_batch(x))
    model.reset_states()
    steps = np.concatenate(
        [np.asarray(model.predict_on_batch(x[:, t : t + 1])) for t in range(STEPS)], axis=1
    )
    model.reset_states()
    print(f"  full {full.shape}, steps {steps.shape}")
    err = float(np.abs(steps - full).max())
    print(f"  max over t of |steps[:, t] - full[:, t]| = {err:.3g}")
    assert err < 1e-5, err
    err = float(np.abs(np.asarray(twin.predict_on_batch(x)) - full).max())
    print(f"  max|stateless twin - full| = {err:.3g}")
    assert err < 1e-5, err

    path = OUT / f"{NAME}.h5"
    model.save(path, include_optimizer=False)
    np.savez(OUT / f"{NAME}.npz", x=x, full=full, steps=steps, tf_version=np.asarray(tf.__version__))
    print(f"  wrote {path} ({path.stat().st_size:,} bytes) and {NAME}.npz "
          f"({(OUT / f'{NAME}.npz').stat().st_size:,} bytes)", flush=True)  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    if parser.parse_args().inside:
        inside()
    else:
        outside()
