"""Make the fixtures of the file formats Keras 2 users hold, with the real old stack (TensorFlow 2.15.1).

    python3.11 scripts/make_keras2_format_fixtures.py     # uses ~/.cache/edgeattn-legacy-venv (see
                                                          # scripts/make_legacy_fixtures.py, which creates it)

Written, each with TF 2.15's own outputs on fixed inputs beside it (``NAME.npz``: ``x`` and ``y``, or one array
per input name), the independent reference of the tests:

tests/fixtures/savedmodel/ (``model.save("folder")``, Keras 2's default when the name has no ``.h5``/``.keras``)
  sm-lstm-attention/     functional: LSTM -> keras.layers.Attention (query: the last state) -> Dense; compiled
  sm-transformer/        functional: Dense projection -> MultiHeadAttention + LayerNormalization blocks -> Dense
  sm-sequential-gru/     Sequential: GRU(reset_after=False) -> Dense
  sm-custom-layer/       functional LSTM -> the user's own layer (``sm_layers.py``, registered) -> Dense
  sm-bilstm-embedding/   functional: Embedding tokens -> Bidirectional LSTM -> AdditiveAttention -> Dense
  sm-attention-package/  functional: LSTM -> the ``attention`` package 5.0.0's Attention(units=8) -> Dense
  sm-lambda/             a Lambda whose code writes $EDGEATTN_MARKER when it runs (proved: tf.keras loading
                         the folder runs it); edgeattn must refuse it by name
  sm23-lstm-attention/   saved by TF 2.3.4 (Python 3.8, ~/.cache/edgeattn-tf23-venv, made when missing): TF 2.0-2.3
  sm23-sequential-bigru/ wrote no keras_metadata.pb; the Keras metadata sits in saved_model.pb's object graph
  sm23-causal-attention/ (AdditiveAttention(causal=True), a constructor argument before Keras 3)

tests/fixtures/sequential/ (old Sequential ``.h5``: TF 2.15 saved the model; its ``model_config`` is then
written as the named Keras version wrote it; the weights are TF 2.15's)
  k224-embedding-lstm.h5   Keras 2.2.4: no InputLayer; Embedding(batch_input_shape=[None, 30], input_length=30)
  k20-list-gru.h5          Keras 2.0.8: the config is a bare list of layers; GRU(batch_input_shape=[None, 12, 3])
  k1-input-dim-lstm.h5     Keras 1 style: LSTM(input_dim=3, input_length=12)
  k2-input-shape-dense.h5  Dense(input_shape=[12, 3]) as a hand-written config would say it
  k2-input-dim-dense.h5    Dense(input_dim=5) on a 2-D input
  k215-embedding-free.h5   TF 2.15: InputLayer + Embedding with input_length None (free time axis)

tests/fixtures/keras2/k215-compile-addons.keras: a ``.keras`` from tf.keras 2.15 whose ``compile_config`` names
a loss registered as ``Addons>SigmoidFocalCrossEntropy`` (a class edgeattn does not know and must not need).
tests/fixtures/keras2/k215-bilstm-mha-bn.keras and .h5: one model (Bidirectional LSTM, MultiHeadAttention,
LayerNormalization, causal Conv1D, BatchNormalization) in both tf.keras 2.15 formats.
tests/fixtures/keras2/k215-time-major.h5: an LSTM with time_major=True (refused by name).

Never install this stack in CI: the files are committed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
VENV = Path(os.environ.get("EDGEATTN_LEGACY_VENV", Path.home() / ".cache" / "edgeattn-legacy-venv"))


VENV_TF23 = Path(os.environ.get("EDGEATTN_TF23_VENV", Path.home() / ".cache" / "edgeattn-tf23-venv"))


def outside() -> None:
    python = VENV / "bin" / "python"
    if not python.exists():
        sys.exit(f"error: {python} is missing: run scripts/make_legacy_fixtures.py once to create it")
    package = VENV / "attention-5.0.0"  # beside the venv, as scripts/make_legacy_fixtures.py installs it
    if not package.exists():
        pip = [str(python), "-m", "pip", "install", "-q", "--no-deps", "--target", str(package)]
        subprocess.run([*pip, "attention==5.0.0"], check=True)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": f"{FIXTURES / 'savedmodel'}:{package}"}
    subprocess.run([str(python), __file__, "--inside"], check=True, env=env)
    python = VENV_TF23 / "bin" / "python"
    if not python.exists():
        print(f"creating {VENV_TF23} (Python 3.8, tensorflow-cpu==2.3.4)", flush=True)
        subprocess.run(
            [str(Path.home() / ".pyenv/versions/3.8.18/bin/python"), "-m", "venv", str(VENV_TF23)], check=True
        )
        subprocess.run(
            [
                str(python),
                "-m",
                "pip",
                "install",
                "-q",
                "tensorflow-cpu==2.3.4",
                "h5py<3",
                "numpy<1.19",
                "protobuf<3.21",
            ],
            check=True,
        )
    subprocess.run([str(python), __file__, "--inside-tf23"], check=True, env=env)


def inside_tf23() -> None:
    import numpy as np
    import tensorflow as tf
    from tensorflow.keras import layers as L

    print(f"TF {tf.__version__}", flush=True)
    tf.random.set_seed(5)
    rng = np.random.default_rng(3)
    floats = rng.uniform(-1, 1, (256, 12, 3)).astype("float32")
    target = floats.max(axis=(1, 2))[:, None]
    probe = np.random.default_rng(11).uniform(-1, 1, (6, 12, 3)).astype("float32")
    out = FIXTURES / "savedmodel"

    def save_folder(name, model):
        model.compile("adam", "mse")
        model.fit(floats, target, epochs=3, batch_size=32, verbose=0)
        folder = out / name
        shutil.rmtree(folder, ignore_errors=True)
        model.save(str(folder))
        assert not (folder / "keras_metadata.pb").exists()
        np.savez(out / f"{name}.npz", x=probe, y=model.predict(probe))
        size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        print(f"  savedmodel/{name}: {size:,} bytes (no keras_metadata.pb)", flush=True)

    inp = L.Input((12, 3))
    h = L.LSTM(16, return_sequences=True)(inp)
    context = L.GlobalAveragePooling1D()(L.Attention()([h, h]))
    save_folder("sm23-lstm-attention", tf.keras.Model(inp, L.Dense(1)(context)))
    model = tf.keras.Sequential(
        [L.Bidirectional(L.GRU(6, return_sequences=True), input_shape=(12, 3)), L.Flatten(), L.Dense(1)]
    )
    save_folder("sm23-sequential-bigru", model)
    inp = L.Input((12, 3))
    h = L.GRU(8, return_sequences=True)(inp)
    context = L.AdditiveAttention(causal=True)([h, h])  # Keras 2.3's causal= (Keras 3: use_causal_mask=)
    save_folder("sm23-causal-attention", tf.keras.Model(inp, L.Dense(1)(L.Flatten()(context))))


def inside() -> None:
    import h5py
    import numpy as np
    import tensorflow as tf
    from tensorflow.keras import layers as L

    print(f"TF {tf.__version__}", flush=True)
    tf.keras.utils.set_random_seed(5)
    rng = np.random.default_rng(3)
    floats = rng.uniform(-1, 1, (256, 12, 3)).astype("float32")
    target = floats.max(axis=(1, 2))[:, None]
    tokens = rng.integers(1, 50, (256, 30)).astype("int32")
    token_target = (tokens.max(axis=1) / 50.0)[:, None].astype("float32")
    probe_rng = np.random.default_rng(11)
    probe_floats = probe_rng.uniform(-1, 1, (6, 12, 3)).astype("float32")
    probe_tokens = probe_rng.integers(0, 50, (6, 30)).astype("int32")

    def fit(model, x, y, epochs=3):
        model.compile("adam", "mse")
        model.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
        return model

    def reference(path: Path, model, x) -> None:
        np.savez(path, x=x, y=model.predict(x, verbose=0))

    # -- SavedModel folders -----------------------------------------------------------------------------
    out = FIXTURES / "savedmodel"
    out.mkdir(parents=True, exist_ok=True)

    def save_folder(name, model, x) -> None:
        folder = out / name
        shutil.rmtree(folder, ignore_errors=True)
        model.save(folder)  # no .h5/.keras: a SavedModel folder with keras_metadata.pb
        reference(out / f"{name}.npz", model, x)
        size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        print(f"  savedmodel/{name}: {size:,} bytes", flush=True)

    inp = L.Input((12, 3))
    h = L.LSTM(16, return_sequences=True)(inp)
    last = L.Reshape((1, 16))(h[:, -1])
    context = L.Flatten()(L.Attention()([last, h]))
    model = fit(tf.keras.Model(inp, L.Dense(1)(L.Concatenate()([context, h[:, -1]]))), floats, target)
    save_folder("sm-lstm-attention", model, probe_floats)

    inp = L.Input((12, 3))
    x = L.Dense(16)(inp)
    for _ in range(2):
        a = L.MultiHeadAttention(num_heads=2, key_dim=8)(x, x)
        x = L.LayerNormalization(epsilon=1e-6)(x + a)
        f = L.Dense(16)(L.Dense(32, activation="relu")(x))
        x = L.LayerNormalization(epsilon=1e-6)(x + f)
    model = fit(tf.keras.Model(inp, L.Dense(1)(L.GlobalAveragePooling1D()(x))), floats, target)
    save_folder("sm-transformer", model, probe_floats)

    model = tf.keras.Sequential([L.Input((12, 3)), L.GRU(10, reset_after=False), L.Dense(1)])
    save_folder("sm-sequential-gru", fit(model, floats, target), probe_floats)

    from sm_layers import TemporalAttention  # tests/fixtures/savedmodel/sm_layers.py: the user's own layer

    inp = L.Input((12, 3))
    h = L.LSTM(12, return_sequences=True)(inp)
    model = fit(tf.keras.Model(inp, L.Dense(1)(TemporalAttention(8)(h))), floats, target)
    save_folder("sm-custom-layer", model, probe_floats)

    inp = L.Input((30,), dtype="int32")
    h = L.Bidirectional(L.LSTM(8, return_sequences=True))(L.Embedding(50, 8)(inp))
    context = L.GlobalAveragePooling1D()(L.AdditiveAttention()([h, h]))
    model = fit(tf.keras.Model(inp, L.Dense(1, activation="sigmoid")(context)), tokens, token_target)
    save_folder("sm-bilstm-embedding", model, probe_tokens)

    from attention import Attention  # the attention package 5.0.0

    inp = L.Input((12, 3))
    h = L.LSTM(16, return_sequences=True)(inp)
    model = fit(tf.keras.Model(inp, L.Dense(1)(Attention(8, score="luong")(h))), floats, target)
    save_folder("sm-attention-package", model, probe_floats)

    import tempfile

    code = lambda x: (  # noqa: E731  (a plain lambda: Keras marshals its bytecode into the metadata)
        __import__("pathlib")
        .Path(
            __import__("os").environ.get("EDGEATTN_MARKER")
            or __import__("os").path.join(__import__("tempfile").gettempdir(), "edgeattn-marker")
        )
        .write_text("code ran"),
        x,
    )[1]
    inp = L.Input((12, 3))
    folder = out / "sm-lambda"
    shutil.rmtree(folder, ignore_errors=True)
    tf.keras.Model(inp, L.Dense(1)(L.LSTM(4)(L.Lambda(code)(inp)))).save(folder)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["EDGEATTN_MARKER"] = str(Path(tmp) / "marker")
        tf.keras.models.load_model(folder)
        assert (Path(tmp) / "marker").exists(), "sm-lambda: tf.keras did not run the Lambda; not armed"
    print("  savedmodel/sm-lambda: armed (tf.keras ran its Lambda and wrote the marker)", flush=True)

    # -- old Sequential .h5 configs ----------------------------------------------------------------------
    out = FIXTURES / "sequential"
    out.mkdir(parents=True, exist_ok=True)

    def rewrite_h5(name, model, x, version: str, edit) -> None:
        path = out / f"{name}.h5"
        model.save(path)
        reference(out / f"{name}.npz", model, x)
        with h5py.File(path, "r+") as f:
            config = json.loads(f.attrs["model_config"])
            config = edit(config)
            f.attrs["model_config"] = json.dumps(config).encode("utf-8")
            f.attrs["keras_version"] = version.encode("utf-8")
        print(f"  sequential/{name}.h5: Keras {version} form, {path.stat().st_size:,} bytes", flush=True)

    def layers_of(config):
        return config["config"]["layers"]

    def without_input_layer(config):
        layers = [layer for layer in layers_of(config) if layer["class_name"] != "InputLayer"]
        return {**config, "config": {**config["config"], "layers": layers}}

    def first(config, **changes):
        config = without_input_layer(config)
        layer = layers_of(config)[0]["config"]
        for key in ("batch_input_shape", "input_length"):
            layer.pop(key, None)
        layer.update({k: v for k, v in changes.items() if v is not ...})
        return config

    model = tf.keras.Sequential([L.Embedding(50, 8, input_length=30), L.LSTM(8), L.Dense(1)])
    model.build((None, 30))
    fit(model, tokens, token_target)
    rewrite_h5(
        "k224-embedding-lstm",
        model,
        probe_tokens,
        "2.2.4",
        lambda c: first(c, batch_input_shape=[None, 30], input_length=30, dtype="float32"),
    )

    model = tf.keras.Sequential([L.Input((12, 3)), L.GRU(8, reset_after=False), L.Dense(1)])
    fit(model, floats, target)

    def as_list(config):
        config = first(config, batch_input_shape=[None, 12, 3])
        for layer in layers_of(config):
            layer["config"].pop("reset_after", None)  # Keras 2.0 had no reset_after
        return {"class_name": "Sequential", "config": layers_of(config)}

    rewrite_h5("k20-list-gru", model, probe_floats, "2.0.8", as_list)

    model = fit(tf.keras.Sequential([L.Input((12, 3)), L.LSTM(8), L.Dense(1)]), floats, target)
    rewrite_h5(
        "k1-input-dim-lstm", model, probe_floats, "2.1.6", lambda c: first(c, input_dim=3, input_length=12)
    )

    model = fit(
        tf.keras.Sequential([L.Input((12, 3)), L.Dense(4, activation="tanh"), L.Flatten(), L.Dense(1)]),
        floats,
        target,
    )
    rewrite_h5("k2-input-shape-dense", model, probe_floats, "2.3.1", lambda c: first(c, input_shape=[12, 3]))

    flat = floats[:, :5, 0]
    model = fit(tf.keras.Sequential([L.Input((5,)), L.Dense(6, activation="relu"), L.Dense(1)]), flat, target)
    rewrite_h5("k2-input-dim-dense", model, probe_floats[:, :5, 0], "2.2.4", lambda c: first(c, input_dim=5))

    model = tf.keras.Sequential([L.Input((None,), dtype="int32"), L.Embedding(50, 8), L.GRU(6), L.Dense(1)])
    rewrite_h5("k215-embedding-free", fit(model, tokens, token_target), probe_tokens, "2.15.0", lambda c: c)

    # -- a .keras from tf.keras 2.15 whose compile_config names a loss from another package -----------------
    @tf.keras.utils.register_keras_serializable(package="Addons")
    class SigmoidFocalCrossEntropy(tf.keras.losses.Loss):
        def call(self, y_true, y_pred):
            return tf.reduce_mean(tf.square(y_true - y_pred), axis=-1)

    inp = L.Input((12, 3))
    model = tf.keras.Model(inp, L.Dense(1, activation="sigmoid")(L.LSTM(8)(inp)))
    model.compile("adam", SigmoidFocalCrossEntropy(), metrics=["mae"])
    model.fit(floats, (target > 0.9).astype("float32"), epochs=2, batch_size=32, verbose=0)
    path = FIXTURES / "keras2" / "k215-compile-addons.keras"
    model.save(path)
    reference(FIXTURES / "keras2" / "k215-compile-addons.npz", model, probe_floats)
    print(f"  keras2/{path.name}: {path.stat().st_size:,} bytes", flush=True)

    # tf.keras 2.15 .keras and .h5 of layers whose Keras 2 configs Keras 3 reads otherwise: MultiHeadAttention's
    # build_config (query shape only), BatchNormalization's axis as a list
    inp = L.Input((12, 3))
    h = L.Bidirectional(L.LSTM(8, return_sequences=True))(inp)
    x = L.LayerNormalization()(L.MultiHeadAttention(num_heads=2, key_dim=4)(h, h) + h)
    x = L.BatchNormalization()(L.Conv1D(4, 3, padding="causal")(x))
    model = fit(tf.keras.Model(inp, L.Dense(1)(L.GlobalAveragePooling1D()(x))), floats, target)
    for suffix in (".keras", ".h5"):
        path = FIXTURES / "keras2" / f"k215-bilstm-mha-bn{suffix}"
        model.save(path)
        print(f"  keras2/{path.name}: {path.stat().st_size:,} bytes", flush=True)
    reference(FIXTURES / "keras2" / "k215-bilstm-mha-bn.npz", model, probe_floats)

    # time_major=True: inputs as (time, batch, features), which Keras 3 cannot build; edgeattn must refuse it
    inp = L.Input((12, 3))
    path = FIXTURES / "keras2" / "k215-time-major.h5"
    tf.keras.Model(inp, L.Dense(1)(L.LSTM(4, time_major=True)(inp))).save(path)
    print(f"  keras2/{path.name}: {path.stat().st_size:,} bytes", flush=True)


if __name__ == "__main__":
    if "--inside-tf23" in sys.argv:
        inside_tf23()
    elif "--inside" in sys.argv:
        inside()
    else:
        outside()
