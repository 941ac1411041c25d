"""Make the Keras 2 test fixtures with the real old stack: TensorFlow 2.15.1 and the `attention` package.

    python3.11 scripts/make_legacy_fixtures.py            # creates ~/.cache/edgeattn-legacy-venv once

It builds a side virtual environment (tensorflow-cpu==2.15.1, h5py; attention==4.1 and attention==5.0.0
installed side by side with ``pip --target``), then runs itself inside it once per attention version. Each
model is trained for a few epochs on a small synthetic task (so the weights are not the initial ones), saved
as Keras 2 ``.h5`` and run by TF 2.15 on fixed inputs; the inputs and TF's outputs are saved next to it as
``.npz``. The tests compare edgeattn's ONNX outputs with those stored outputs.

Also written: ``lambda.h5`` and ``nested-lambda.h5`` whose Lambda layer writes the file named by
``$EDGEATTN_MARKER`` when its code runs (the script proves it does, under tf.keras), and ``mask.h5``
(``Embedding(mask_zero=True)``), which edgeattn must refuse by name.

Outputs go to tests/fixtures/legacy/. Never install this stack in CI: the files are committed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "legacy"
VENV = Path(os.environ.get("EDGEATTN_LEGACY_VENV", Path.home() / ".cache" / "edgeattn-legacy-venv"))
VERSIONS = ("4.1", "5.0.0")


def side_python() -> Path:
    """The side venv's python (TF 2.15, Keras 2), created on first use."""
    python = VENV / "bin" / "python"
    if not python.exists():
        print(f"creating {VENV} (tensorflow-cpu==2.15.1; a few minutes)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "tensorflow-cpu==2.15.1", "h5py<3.12", "numpy<2"],
            check=True,
        )
    return python


def outside() -> None:
    python = side_python()
    for version in VERSIONS:
        target = VENV / f"attention-{version}"
        if not target.exists():
            subprocess.run(
                [str(python), "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
                 f"attention=={version}"],
                check=True,
            )  # fmt: skip
    OUT.mkdir(parents=True, exist_ok=True)
    for version in VERSIONS:
        env = {**os.environ, "PYTHONPATH": str(VENV / f"attention-{version}"), "TF_CPP_MIN_LOG_LEVEL": "3"}
        subprocess.run([str(python), __file__, "--inside", version], check=True, env=env)


def inside(version: str) -> None:
    import numpy as np
    import tensorflow as tf
    from attention import Attention
    from tensorflow.keras import layers as L

    print(f"TF {tf.__version__}, attention {version}", flush=True)
    tf.keras.utils.set_random_seed(7)

    def attention(units, score):
        return Attention(units) if version == "4.1" else Attention(units, score=score)

    def save(name, model, x, y, epochs=3):
        model.compile("adam", "mse" if model.output_shape[-1] == 1 else "categorical_crossentropy")
        model.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
        path = OUT / f"{name}.h5"
        model.save(path)
        rng = np.random.default_rng(11)
        probe = _probe_like(x, rng)
        outputs = model.predict(probe, verbose=0)
        np.savez(OUT / f"{name}.npz", x=probe, y=outputs)
        print(f"  {path.name}: {path.stat().st_size:,} bytes, outputs {outputs.shape}", flush=True)

    rng = np.random.default_rng(3)
    floats = rng.uniform(-1, 1, (256, 12, 3)).astype("float32")
    target = floats.max(axis=(1, 2))[:, None]
    tokens = rng.integers(1, 40, (256, 12)).astype("int32")
    token_target = (tokens.max(axis=1) / 40.0)[:, None].astype("float32")
    classes = np.eye(3, dtype="float32")[floats[:, :, 0].argmax(axis=1) % 3]

    v = version.replace(".", "")
    # The seed's model, as the attention package's README builds it.
    inp = L.Input((12, 3))
    h = L.LSTM(16, return_sequences=True)(inp)
    save(f"a{v}-lstm-luong", tf.keras.Model(inp, L.Dense(1)(attention(8, "luong")(h))), floats, target)

    model = tf.keras.Sequential(
        [L.Input((None, 3)), L.GRU(12, return_sequences=True), attention(8, "luong"), L.Dense(1)]
    )
    save(f"a{v}-sequential-gru", model, floats, target)
    if version == "4.1":
        _marker_models(tf, L)
        return

    inp = L.Input((12, 3))
    h = L.Bidirectional(L.GRU(8, return_sequences=True, reset_after=False))(inp)
    h = L.Dropout(0.2)(attention(6, "bahdanau")(h))
    save(f"a{v}-bigru-bahdanau", tf.keras.Model(inp, L.Dense(3, activation="softmax")(h)), floats, classes)

    inp = L.Input((12,), dtype="int32")  # the package's bahdanau score needs a fixed time axis
    h = L.Embedding(40, 8)(inp)
    h = L.Bidirectional(L.LSTM(8, return_sequences=True))(h)
    out = L.Dense(1, activation="sigmoid")(attention(6, "bahdanau")(h))
    save(f"a{v}-embedding-bilstm-bahdanau", tf.keras.Model(inp, out), tokens, token_target)

    model = tf.keras.Sequential(
        [
            L.Input((None,), dtype="int32"),
            L.Embedding(40, 8),
            L.SimpleRNN(10, return_sequences=True),
            attention(6, "luong"),
            L.Dense(1),
        ]
    )
    save(f"a{v}-sequential-embedding-simplernn", model, tokens, token_target)

    inp = L.Input((12, 3))
    h = L.Bidirectional(L.SimpleRNN(6, return_sequences=True), merge_mode="sum")(inp)
    h = L.GRU(6, return_sequences=True, go_backwards=True)(h)
    save(
        f"a{v}-birnn-gru-backwards", tf.keras.Model(inp, L.Dense(1)(attention(4, "luong")(h))), floats, target
    )

    # Keras 2's hard sigmoid (clip(0.2 x + 0.5)) is not Keras 3's (clip(x / 6 + 0.5)): the loader must keep it.
    inp = L.Input((12, 3))
    h = L.LSTM(8, recurrent_activation="hard_sigmoid", return_sequences=True)(inp)
    h = L.GRU(6, recurrent_activation="hard_sigmoid", return_sequences=True)(h)
    save(f"a{v}-hard-sigmoid", tf.keras.Model(inp, L.Dense(1)(attention(4, "luong")(h))), floats, target)

    model = tf.keras.Sequential(
        [L.Input((12,), dtype="int32"), L.Embedding(40, 8, mask_zero=True), L.LSTM(8)]
    )
    model.add(L.Dense(1))
    save("mask", model, tokens, token_target, epochs=1)


def _probe_like(x, rng):

    if x.dtype.kind == "i":
        return rng.integers(1, int(x.max()) + 1, (5, x.shape[1])).astype(x.dtype)
    return rng.uniform(-1, 1, (5, *x.shape[1:])).astype(x.dtype)


def _marker_models(tf, L) -> None:
    """Lambda models whose code writes $EDGEATTN_MARKER when deserialized; proved armed under tf.keras."""
    import tempfile

    # A plain lambda so that Keras marshals its bytecode into the file (a named function would be saved by name).
    # Without $EDGEATTN_MARKER the marker goes to the temporary folder, never into the working directory.
    code = lambda x: (  # noqa: E731
        __import__("pathlib")
        .Path(
            __import__("os").environ.get("EDGEATTN_MARKER")
            or __import__("os").path.join(__import__("tempfile").gettempdir(), "edgeattn-marker")
        )
        .write_text("code ran"),
        x,
    )[1]
    inp = L.Input((12, 3))
    h = L.LSTM(8)(L.Lambda(code)(inp))
    tf.keras.Model(inp, L.Dense(1)(h)).save(OUT / "lambda.h5")

    inner = tf.keras.Sequential([L.Input((12, 3)), L.Lambda(code), L.LSTM(8)], name="inner")
    inp = L.Input((12, 3))
    tf.keras.Model(inp, L.Dense(1)(inner(inp))).save(OUT / "nested-lambda.h5")

    for name in ("lambda.h5", "nested-lambda.h5"):
        with tempfile.TemporaryDirectory() as tmp:
            marker = Path(tmp) / "marker"
            os.environ["EDGEATTN_MARKER"] = str(marker)
            tf.keras.models.load_model(OUT / name)
            assert marker.exists(), f"{name}: the Lambda did not run under tf.keras; the fixture is not armed"
            print(f"  {name}: armed (tf.keras ran its Lambda and wrote the marker)", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--inside", metavar="VERSION", help=argparse.SUPPRESS)
    parser.add_argument(
        "--only-markers", action="store_true", help="remake only lambda.h5 and nested-lambda.h5"
    )
    args = parser.parse_args()
    if args.inside == "markers":
        import tensorflow as tf
        from tensorflow.keras import layers as L

        _marker_models(tf, L)
    elif args.inside:
        inside(args.inside)
    elif args.only_markers:
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
        subprocess.run([str(side_python()), __file__, "--inside", "markers"], check=True, env=env)
    else:
        outside()
