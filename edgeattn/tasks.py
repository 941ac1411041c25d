"""Synthetic tasks and the seed's model builder.

``find-max``: x uniform in [0, 1) of shape (n, 10, 1), y = the largest value over time. A many-to-one model
with attention solves it by looking at the right time step, which makes its attention weights easy to read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

TIME_STEPS = 10
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

    from edgeattn.layers import Attention

    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape=(time_steps, features), name="x")
    h = keras.layers.LSTM(lstm_units, return_sequences=True, name="lstm")(inputs)
    a = Attention(units=attention_units, score=score, name="attention")(h)
    y = keras.layers.Dense(1, name="y")(a)
    model = keras.Model(inputs, y, name="seed")
    model.compile(loss="mae", optimizer=keras.optimizers.Adam(learning_rate=3e-3))
    return model


EpochCallback = Callable[[int, int, dict], None]


@dataclass(frozen=True)
class TrainResult:
    model: object
    epochs: int
    val_mae: float
    baseline_mae: float
    seconds: float


TASKS = ("find-max",)


def train(
    task: str = "find-max",
    epochs: int = 20,
    seed: int = 0,
    n_train: int = 20_000,
    batch_size: int = 128,
    on_epoch: EpochCallback | None = None,
) -> TrainResult:
    """Train the model of ``task``; ``on_epoch(epoch, epochs, logs)`` is called after each epoch."""
    import time

    import keras

    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; known: {', '.join(TASKS)}")
    data = find_max_dataset(n_train=n_train, n_val=max(200, n_train // 10), seed=seed)
    model = build_seed_model(seed=seed)

    class _Report(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if on_epoch is not None:
                on_epoch(epoch + 1, epochs, dict(logs or {}))

    start = time.perf_counter()
    model.fit(
        data.x_train,
        data.y_train,
        validation_data=(data.x_val, data.y_val),
        epochs=epochs,
        batch_size=batch_size,
        shuffle=True,
        verbose=0,
        callbacks=[_Report()],
    )
    seconds = time.perf_counter() - start
    pred = model.predict(data.x_val, batch_size=1024, verbose=0)
    val_mae = float(np.abs(pred - data.y_val).mean())
    # What a model that ignores its input can do: always predict the mean target.
    baseline = float(np.abs(data.y_val - data.y_train.mean()).mean())
    return TrainResult(model=model, epochs=epochs, val_mae=val_mae, baseline_mae=baseline, seconds=seconds)
