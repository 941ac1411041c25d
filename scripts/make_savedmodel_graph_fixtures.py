"""Make the SavedModel test fixtures that hold no usable Keras config, with TensorFlow 2.15.1 (Keras 2).

    python3.11 scripts/make_savedmodel_graph_fixtures.py   # uses ~/.cache/edgeattn-legacy-venv (see
                                                           # scripts/make_legacy_fixtures.py, which creates it)

It runs itself inside the side virtual environment and writes, under tests/fixtures/savedmodel/:

- ``subclassed-lstm-attention/``: a subclassed ``tf.keras.Model`` (LSTM(16, return_sequences=True) -> a
  hand-written dot attention: softmax over time of h_t . W h_T, the context -> Dense(1)), trained a few epochs
  on find-max, saved with ``model.save(folder)``: ``keras_metadata.pb`` exists but records class names only.
- ``subclassed-embedding-gru/``: a subclassed model over token ids (Embedding, read by ``ResourceGather``,
  -> GRU -> attention on the last state -> Dense), saved the same way.
- ``module-dense-attention/``: a ``tf.Module`` with ``tf.Variable`` weights and a ``tf.function`` signature
  (dense projection, attention over time, two outputs ``scores`` and ``attention``), ``tf.saved_model.save``.
- hostile ones, each proved armed here (loaded with ``tf.saved_model.load`` and its signature called, the
  marker appears): ``hostile-write-file/`` (the signature calls a nested ``tf.function`` whose ``tf.cond``
  branch runs ``tf.io.write_file("edgeattn-marker", ...)``: a relative path, so the marker lands in the
  working folder of whatever process runs the graph), ``hostile-py-function/`` (``tf.py_function``) and
  ``hostile-numpy-function/`` (``tf.numpy_function``), whose Python callbacks write the marker.
  A SavedModel does not store a py_function's Python code: its ``EagerPyFunc``/``PyFunc`` node calls whatever
  callback the loading process has registered under the node's token (``pyfunc_0``, ...). The proof here runs
  in the saving process, where the token still names the marker-writing callback.

Beside each folder ``<name>.npz`` holds fixed inputs (``input:<name>``) and TF 2.15's outputs of the serving
signature on them (``output:<name>``). The files are committed; never install this stack in CI.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "savedmodel"
VENV = Path(os.environ.get("EDGEATTN_LEGACY_VENV", Path.home() / ".cache" / "edgeattn-legacy-venv"))
MARKER = "edgeattn-marker"


def outside() -> None:
    python = VENV / "bin" / "python"
    if not python.exists():
        sys.exit(f"{python} is missing: run scripts/make_legacy_fixtures.py once to create the side venv")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    subprocess.run([str(python), __file__, "--inside"], check=True, env=env)


def _save_reference(name: str, folder: Path, inputs: dict) -> None:
    import numpy as np
    import tensorflow as tf

    signature = tf.saved_model.load(str(folder)).signatures["serving_default"]
    outputs = signature(**{k: tf.constant(v) for k, v in inputs.items()})
    arrays = {f"input:{k}": v for k, v in inputs.items()}
    arrays.update({f"output:{k}": v.numpy() for k, v in outputs.items()})
    np.savez(OUT / f"{name}.npz", **arrays)
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    shapes = {k: tuple(v.shape) for k, v in outputs.items()}
    print(f"  {name}/: {size:,} bytes; outputs {shapes}", flush=True)


def _fresh(name: str) -> Path:
    folder = OUT / name
    shutil.rmtree(folder, ignore_errors=True)
    return folder


def inside() -> None:
    import numpy as np
    import tensorflow as tf

    L = tf.keras.layers
    print(f"TF {tf.__version__}", flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    tf.keras.utils.set_random_seed(5)
    rng = np.random.default_rng(3)
    x = rng.uniform(0, 1, (2048, 12, 3)).astype("float32")
    y = x.max(axis=(1, 2))[:, None]
    probe = np.random.default_rng(11).uniform(-1, 1, (5, 12, 3)).astype("float32")

    # (a) a subclassed Keras 2 model: keras_metadata.pb records class names, no layers config.
    class LstmDotAttention(tf.keras.Model):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.lstm = L.LSTM(16, return_sequences=True)
            self.query = L.Dense(16, use_bias=False)
            self.head = L.Dense(1)

        def call(self, inputs):
            h = self.lstm(inputs)  # (batch, time, 16)
            last = h[:, -1, :]
            scores = tf.squeeze(tf.matmul(h, self.query(last)[:, :, None]), -1)  # (batch, time)
            weights = tf.nn.softmax(scores, axis=1)
            context = tf.reduce_sum(h * weights[:, :, None], axis=1)
            return self.head(tf.concat([context, last], axis=-1))

    model = LstmDotAttention()
    model.compile("adam", "mse")
    model.fit(x, y, epochs=4, batch_size=64, verbose=0)
    print(f"  subclassed model: train mse {model.evaluate(x, y, verbose=0):.4f}", flush=True)
    folder = _fresh("subclassed-lstm-attention")
    model.save(str(folder), include_optimizer=False)
    _save_reference("subclassed-lstm-attention", folder, {"input_1": probe})

    # (a2) a subclassed model over token ids: Embedding (a ResourceGather) -> GRU -> attention on the last state
    class TokenGruAttention(tf.keras.Model):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.embed = L.Embedding(50, 8)
            self.gru = L.GRU(8, return_sequences=True)
            self.head = L.Dense(1, activation="sigmoid")

        def call(self, inputs):
            h = self.gru(self.embed(inputs))
            weights = tf.nn.softmax(tf.reduce_sum(h * h[:, -1:, :], axis=-1), axis=1)
            return self.head(tf.reduce_sum(h * weights[:, :, None], axis=1))

    tokens = rng.integers(0, 50, (1024, 20)).astype("int32")
    model = TokenGruAttention()
    model.compile("adam", "mse")
    model.fit(tokens, (tokens.max(axis=1) / 50.0)[:, None], epochs=3, batch_size=64, verbose=0)
    folder = _fresh("subclassed-embedding-gru")
    model.save(str(folder), include_optimizer=False)
    probe_tokens = np.random.default_rng(11).integers(0, 50, (5, 20)).astype("int32")
    _save_reference("subclassed-embedding-gru", folder, {"input_1": probe_tokens})

    # (b) a tf.Module: variables and a tf.function signature, nothing of Keras.
    class DenseAttention(tf.Module):
        def __init__(self):
            super().__init__()
            init = np.random.default_rng(7)
            self.w = tf.Variable(init.normal(0, 0.5, (3, 8)).astype("float32"), name="w")
            self.b = tf.Variable(init.normal(0, 0.1, (8,)).astype("float32"), name="b")
            self.q = tf.Variable(init.normal(0, 0.5, (8,)).astype("float32"), name="q")
            self.v = tf.Variable(init.normal(0, 0.5, (8, 2)).astype("float32"), name="v")

        @tf.function(input_signature=[tf.TensorSpec([None, 12, 3], tf.float32, name="x")])
        def __call__(self, x):
            h = tf.tanh(tf.tensordot(x, self.w, axes=1) + self.b)  # (batch, time, 8)
            weights = tf.nn.softmax(tf.reduce_sum(h * self.q, axis=-1), axis=1)  # (batch, time)
            context = tf.reduce_sum(h * weights[:, :, None], axis=1)
            return {"scores": tf.matmul(context, self.v), "attention": weights}

    module = DenseAttention()
    folder = _fresh("module-dense-attention")
    tf.saved_model.save(module, str(folder), signatures={"serving_default": module.__call__})
    _save_reference("module-dense-attention", folder, {"x": probe})

    _hostile(tf, probe)


def _hostile(tf, probe) -> None:
    """SavedModels whose signature writes the marker file when TensorFlow runs it."""
    import numpy as np

    spec = [tf.TensorSpec([None, 12, 3], tf.float32, name="x")]

    def marker_callback(value):
        Path(os.environ.get("EDGEATTN_MARKER") or MARKER).write_text("code ran")
        return value

    class WriteFile(tf.Module):
        def __init__(self):
            super().__init__()
            self.scale = tf.Variable(2.0)

        @tf.function
        def log(self, x):  # nested: the op sits in a tf.cond branch of a function the signature calls
            return tf.cond(
                tf.reduce_sum(x) > -1e30,
                lambda: tf.io.write_file(MARKER, tf.strings.as_string(tf.reduce_sum(x))),
                lambda: tf.no_op(),
            )

        @tf.function(input_signature=spec)
        def __call__(self, x):
            with tf.control_dependencies([self.log(x)]):
                return {"y": tf.identity(x * self.scale)}

    class PyFunction(tf.Module):
        @tf.function(input_signature=spec)
        def __call__(self, x):
            return {"y": tf.py_function(marker_callback, [x], tf.float32) * 2.0}

    class NumpyFunction(tf.Module):
        @tf.function(input_signature=spec)
        def __call__(self, x):
            return {"y": tf.numpy_function(marker_callback, [x], tf.float32) * 2.0}

    for name, module in (
        ("hostile-write-file", WriteFile()),
        ("hostile-py-function", PyFunction()),
        ("hostile-numpy-function", NumpyFunction()),
    ):
        folder = _fresh(name)
        tf.saved_model.save(module, str(folder), signatures={"serving_default": module.__call__})
        with tempfile.TemporaryDirectory() as tmp:
            here = os.getcwd()
            os.chdir(tmp)
            try:
                os.environ["EDGEATTN_MARKER"] = str(Path(tmp) / MARKER)
                signature = tf.saved_model.load(str(folder)).signatures["serving_default"]
                outputs = signature(x=tf.constant(probe))
                assert (Path(tmp) / MARKER).exists(), f"{name}: no marker; the fixture is not armed"
            finally:
                os.chdir(here)
                del os.environ["EDGEATTN_MARKER"]
        size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        print(f"  {name}/: {size:,} bytes; armed (TF ran its signature and wrote the marker)", flush=True)
        np.savez(OUT / f"{name}.npz", **{"input:x": probe, "output:y": outputs["y"].numpy()})


if __name__ == "__main__":
    if sys.argv[1:] == ["--inside"]:
        inside()
    else:
        outside()
