"""Synthetic tasks and the seed's model builder.

``find-max``: x uniform in [0, 1) of shape (n, 10, 1), y = the largest value over time. A many-to-one model
with attention solves it by looking at the right time step, which makes its attention weights easy to read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from edgeattn.core import defaults

TIME_STEPS = defaults.TIME_STEPS
FEATURES = 1


@dataclass(frozen=True)
class Dataset:
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray


def find_max_data(n: int, seed: int = 0, time_steps: int = TIME_STEPS) -> tuple[np.ndarray, np.ndarray]:
    """``n`` samples of the find-max task: x of shape (n, time_steps, 1) in [0, 1), y of shape (n, 1)."""
    rng = np.random.default_rng(seed)
    x = rng.random((n, time_steps, FEATURES), dtype=np.float32)
    y = x.max(axis=1)
    return x, y


def find_max_dataset(n_train: int = 20_000, n_val: int = 2_000, seed: int = 0) -> Dataset:
    x_train, y_train = find_max_data(n_train, seed=seed)
    x_val, y_val = find_max_data(n_val, seed=seed + 1)
    return Dataset(x_train, y_train, x_val, y_val)


def build_seed_model(
    time_steps: int | None = TIME_STEPS,
    features: int = FEATURES,
    lstm_units: int = 64,
    attention_units: int = 32,
    score: str = "luong",
    seed: int = 0,
):
    """The seed's model: LSTM(64, return_sequences) -> Attention(32) -> Dense(1), compiled with MAE/Adam."""
    import keras

    from edgeattn.convert.layers import Attention

    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape=(time_steps, features), name="x")
    h = keras.layers.LSTM(lstm_units, return_sequences=True, name="lstm")(inputs)
    a = Attention(units=attention_units, score=score, name="attention")(h)
    y = keras.layers.Dense(1, name="y")(a)
    model = keras.Model(inputs, y, name="seed")
    model.compile(loss="mae", optimizer=keras.optimizers.Adam(learning_rate=3e-3))
    return model


def kernel_regression_data(n_train: int = 50, seed: int = 0):
    """The classic Nadaraya-Watson set-up: x sorted in [0, 5), y = 2 sin(x) + x^0.8 + noise N(0, 0.5).

    Returns ``(x_train, y_train, x_test, y_truth)``: 50 noisy training pairs and a noise-free test grid.
    """
    rng = np.random.default_rng(seed)
    x_train = np.sort(rng.random(n_train) * 5).astype(np.float32)
    y_train = (_kernel_target(x_train) + rng.normal(0.0, 0.5, n_train)).astype(np.float32)
    x_test = np.arange(0, 5, 0.1, dtype=np.float32)
    return x_train, y_train, x_test, _kernel_target(x_test).astype(np.float32)


def _kernel_target(x: np.ndarray) -> np.ndarray:
    return 2 * np.sin(x) + x**0.8


def leave_one_out(x_train: np.ndarray, y_train: np.ndarray):
    """Each training query attends over the other n - 1 training pairs: queries (n, 1), keys/values (n, n-1)."""
    n = len(x_train)
    others = ~np.eye(n, dtype=bool)
    keys = np.broadcast_to(x_train, (n, n))[others].reshape(n, n - 1)
    values = np.broadcast_to(y_train, (n, n))[others].reshape(n, n - 1)
    return x_train[:, None], keys, values


def build_kernel_model(bandwidth: float = 1.0, seed: int = 0):
    """queries (batch, n_queries), keys and values (batch, n_keys) -> NadarayaWatson -> (batch, n_queries)."""
    import keras

    from edgeattn.convert.layers import NadarayaWatson

    keras.utils.set_random_seed(seed)
    queries = keras.Input(shape=(None,), name="queries")
    keys = keras.Input(shape=(None,), name="keys")
    values = keras.Input(shape=(None,), name="values")
    output = NadarayaWatson(bandwidth=bandwidth, name="nadaraya_watson")([queries, keys, values])
    model = keras.Model([queries, keys, values], output, name="kernel_regression")
    model.compile(loss="mse", optimizer=keras.optimizers.SGD(learning_rate=0.5))
    return model


EpochCallback = Callable[[int, int, dict], None]


@dataclass(frozen=True)
class TrainResult:
    model: object
    epochs: int
    val_mae: float
    baseline_mae: float
    seconds: float


TASKS = ("find-max", "kernel-regression")


class _EpochReport:
    """A Keras callback (made lazily, Keras is imported only when training) that forwards epoch logs."""

    def __new__(cls, on_epoch: EpochCallback | None, epochs: int):
        import keras

        class Report(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                if on_epoch is not None:
                    on_epoch(epoch + 1, epochs, dict(logs or {}))

        return Report()


def train(
    task: str = defaults.TASK,
    epochs: int = defaults.EPOCHS,
    seed: int = defaults.SEED,
    n_train: int = defaults.TRAIN_SAMPLES,
    batch_size: int = 128,
    on_epoch: EpochCallback | None = None,
) -> TrainResult:
    """Train the model of ``task``; ``on_epoch(epoch, epochs, logs)`` is called after each epoch.

    ``val_mae`` is measured on held-out data: the find-max validation set, or for kernel-regression the
    noise-free curve on the test grid (queries attending over all training pairs).
    """
    import time

    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; known: {', '.join(TASKS)}")
    start = time.perf_counter()
    if task == "kernel-regression":
        x_train, y_train, x_test, y_truth = kernel_regression_data(seed=seed)
        model = build_kernel_model(seed=seed)
        q, k, v = leave_one_out(x_train, y_train)
        model.fit(
            [q, k, v],
            y_train[:, None],
            epochs=epochs,
            batch_size=len(q),
            shuffle=False,
            verbose=0,
            callbacks=[_EpochReport(on_epoch, epochs)],
        )
        n = len(x_test)
        keys, values = (
            np.broadcast_to(x_train, (n, len(x_train))),
            np.broadcast_to(y_train, (n, len(y_train))),
        )
        pred = model.predict([x_test[:, None], keys, values], verbose=0)
        val_mae = float(np.abs(pred[:, 0] - y_truth).mean())
        baseline = float(np.abs(y_truth - y_train.mean()).mean())
    else:
        data = find_max_dataset(n_train=n_train, n_val=max(200, n_train // 10), seed=seed)
        model = build_seed_model(seed=seed)
        model.fit(
            data.x_train,
            data.y_train,
            validation_data=(data.x_val, data.y_val),
            epochs=epochs,
            batch_size=batch_size,
            shuffle=True,
            verbose=0,
            callbacks=[_EpochReport(on_epoch, epochs)],
        )
        pred = model.predict(data.x_val, batch_size=1024, verbose=0)
        val_mae = float(np.abs(pred - data.y_val).mean())
        # What a model that ignores its input can do: always predict the mean target.
        baseline = float(np.abs(data.y_val - data.y_train.mean()).mean())
    seconds = time.perf_counter() - start
    return TrainResult(model=model, epochs=epochs, val_mae=val_mae, baseline_mae=baseline, seconds=seconds)
