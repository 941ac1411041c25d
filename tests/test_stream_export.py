"""Stateful and step models (#28): the export carries the state as inputs and outputs, and stepping the ONNX
model with onnxruntime gives what Keras computes on the whole sequence, at every step. The stepping loops here
are the tests' own (plain onnxruntime), not edgeattn's, and the references are Keras's own runs."""

from __future__ import annotations

import json
import re

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import MODELS, run_cli

keras = pytest.importorskip("keras")


def _causal_model():
    x = keras.Input((None, 3), name="x")
    h = keras.layers.LSTM(16, return_sequences=True, name="lstm")(x)
    c = keras.layers.Conv1D(8, 3, padding="causal", dilation_rate=2, activation="relu", name="conv1d")(h)
    a = keras.layers.MultiHeadAttention(2, 8, name="mha")(c, c, use_causal_mask=True)
    g = keras.layers.GRU(6, return_sequences=True, name="gru")(keras.layers.Add()([c, a]))
    b = keras.layers.Attention(name="att")([g, g], use_causal_mask=True)
    y = keras.layers.Dense(2, name="out")(keras.layers.Concatenate()([g, b]))
    return keras.Model(x, y, name="causal")


@pytest.fixture(scope="module")
def causal(tmp_path_factory):
    keras.utils.set_random_seed(3)
    folder = tmp_path_factory.mktemp("stream")
    model = _causal_model()
    model.save(folder / "causal.keras")
    done = run_cli(
        "export", folder / "causal.keras", "-o", folder / "step.onnx", "--streaming", "--max-steps", "64"
    )
    assert done.returncode == 0, done.stderr
    return folder, model, done.stdout


def _steps_of(path, x, chunk=1):
    """The tests' own stepping loop (plain onnxruntime): zeros (empty caches) at the start, each state output
    fed back, ``chunk`` steps a run; a many-to-one output stacked per run. Returns (outputs, metadata, the
    last states)."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    meta = json.loads(session.get_modelmeta().custom_metadata_map["edgeattn.stream"])
    states = {s["input"]: np.zeros((x.shape[0], *[0 if d is None else d for d in s["shape"]]), np.float32)
              for s in meta["states"]}  # fmt: skip
    names = [o.name for o in session.get_outputs()]
    outs = []
    for t in range(0, x.shape[1], chunk):
        named = dict(zip(names, session.run(None, {meta["inputs"][0]: x[:, t : t + chunk], **states})))
        outs.append(named[meta["outputs"][0]])
        states.update({s["input"]: named[s["output"]] for s in meta["states"]})
    return (np.concatenate(outs, axis=1) if outs[0].ndim == 3 else np.stack(outs, axis=1)), meta, states


def test_the_step_model_of_a_causal_model_gives_keras_full_run_at_every_step_of_its_cache(causal):
    folder, model, printed = causal
    x = np.random.default_rng(0).normal(size=(2, 200, 3)).astype(np.float32)
    got, meta, states = _steps_of(folder / "step.onnx", x)
    want = np.asarray(model(x))  # Keras on the whole sequence: causal, so position t is the output so far
    assert np.max(np.abs(got[:, :64] - want[:, :64])) < 1e-5
    names = [s["input"] for s in meta["states"]]
    assert {"lstm/h", "lstm/c", "gru/h", "conv1d/buffer", "mha/key", "mha/value", "att/value"} == set(names)
    assert states["mha/key"].shape[1] == 63  # the cache keeps max_steps - 1 steps (with the new one, 64)
    proto = onnx.load(folder / "step.onnx")
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("LSTM") == 1 and ops.count("GRU") == 1 and "Loop" not in ops and "Scan" not in ops
    assert "stream  step model" in printed and "fed one step a run" in printed


def test_without_a_cap_two_hundred_steps_match_keras(tmp_path):
    keras.utils.set_random_seed(4)
    x_in = keras.Input((None, 3), name="x")
    h = keras.layers.LSTM(12, return_sequences=True, name="lstm")(x_in)
    a = keras.layers.MultiHeadAttention(2, 4, name="mha")(h, h, use_causal_mask=True)
    model = keras.Model(x_in, keras.layers.Dense(1)(a))
    model.save(tmp_path / "m.keras")
    done = run_cli(
        "export", tmp_path / "m.keras", "-o", tmp_path / "s.onnx", "--streaming", "--max-steps", "200"
    )
    assert done.returncode == 0, done.stderr
    x = np.random.default_rng(1).uniform(-1, 1, size=(3, 200, 3)).astype(np.float32)
    got, _, _ = _steps_of(tmp_path / "s.onnx", x)
    assert np.max(np.abs(got - np.asarray(model(x)))) < 1e-5


def test_verify_passes_the_stream_and_fails_a_cut_state_naming_the_step(causal, tmp_path):
    folder, _, _ = causal
    done = run_cli("verify", folder / "step.onnx", "--lengths", "1,12", "--batches", "1,2")
    assert done.returncode == 0, done.stderr
    assert "verify: pass" in done.stdout
    assert re.search(r"^  mha +\S+ .* pass$", done.stdout, re.M), done.stdout  # the layers are compared too
    proto = onnx.load(folder / "step.onnx")
    kept = [o for o in proto.graph.output if o.name != "lstm/h_next"]
    del proto.graph.output[:]
    proto.graph.output.extend(kept)
    onnx.save(proto, tmp_path / "cut.onnx")
    done = run_cli("verify", tmp_path / "cut.onnx", "--keras", folder / "causal.keras", "--lengths", "12")
    assert done.returncode == 1
    assert "first diverges at step 2" in done.stderr and "layer 'lstm'" in done.stderr, done.stderr
    assert "state output 'lstm/h_next' is not in the graph" in done.stdout


def test_a_stateful_model_carries_its_state_across_chunks_like_keras(tmp_path):
    keras.utils.set_random_seed(5)
    x_in = keras.Input(batch_shape=(2, None, 4), name="x")
    h = keras.layers.LSTM(10, stateful=True, return_sequences=True, name="lstm")(x_in)
    h = keras.layers.SimpleRNN(5, stateful=True, return_sequences=True, name="rnn")(h)
    h = keras.layers.GRU(6, stateful=True, name="gru")(h)
    model = keras.Model(x_in, keras.layers.Dense(2, name="out")(h))
    model.save(tmp_path / "stateful.keras")
    done = run_cli("export", tmp_path / "stateful.keras", "-o", tmp_path / "stateful.onnx")
    assert done.returncode == 0, done.stderr
    x = np.random.default_rng(2).normal(size=(2, 60, 4)).astype(np.float32)
    want = []  # Keras's own stateful run, chunk by chunk
    for layer in model.layers:
        if hasattr(layer, "reset_state") and getattr(layer, "stateful", False):
            layer.reset_state()
    for start in range(0, 60, 15):
        want.append(np.asarray(model(x[:, start : start + 15])))
    session = ort.InferenceSession(str(tmp_path / "stateful.onnx"), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    assert names == ["x", "lstm/h", "lstm/c", "rnn/h", "gru/h"]
    sizes = {"lstm/h": 10, "lstm/c": 10, "rnn/h": 5, "gru/h": 6}
    state = {name: np.zeros((2, size), np.float32) for name, size in sizes.items()}
    for i, start in enumerate(range(0, 60, 15)):
        y, *carried = session.run(None, {"x": x[:, start : start + 15], **state})
        state = dict(zip(sizes, carried))
        assert np.max(np.abs(y - want[i])) < 1e-5, i


@pytest.mark.parametrize(
    "layer, words",
    [
        (lambda h: keras.layers.Bidirectional(keras.layers.LSTM(4, return_sequences=True), name="bi")(h),
         "'bi' reads the sequence backwards"),
        (lambda h: keras.layers.Attention(name="att")([h, h]), "'att' attends over the whole window"),
        (lambda h: keras.layers.GlobalAveragePooling1D(name="pool")(h), "'pool' pools over the whole window"),
        (lambda h: keras.layers.Conv1D(4, 3, padding="same", name="conv")(h), "'conv' pads 'same'"),
        (lambda h: (lambda c: c(c(h)))(keras.layers.Conv1D(4, 3, padding="causal", name="conv")),
         "'conv' is called more than once"),
        (lambda h: keras.layers.LSTM(4, return_sequences=True, name="dec")(
            h, initial_state=keras.layers.LSTM(4, return_state=True, name="enc")(h)[1:]),
         "'dec' takes its initial state from another layer"),
    ],
)  # fmt: skip
def test_a_layer_that_reads_the_future_is_refused_by_name(tmp_path, layer, words):
    x_in = keras.Input((None, 3), name="x")
    out = keras.layers.Dense(1)(layer(keras.layers.LSTM(4, return_sequences=True, name="lstm")(x_in)))
    keras.Model(x_in, out).save(tmp_path / "m.keras")
    done = run_cli("export", tmp_path / "m.keras", "-o", tmp_path / "s.onnx", "--streaming")
    assert done.returncode == 2, done.stdout
    assert done.stderr.startswith("error: cannot stream") and words in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "s.onnx").exists()


def test_the_shipped_window_model_is_refused_with_the_way_to_stream_it(tmp_path):
    done = run_cli("export", MODELS / "seed.keras", "-o", tmp_path / "s.onnx", "--streaming")
    assert done.returncode == 2
    assert "cannot tell that it reads only the past" in done.stderr and "Predictor.window" in done.stderr


FIXTURES = MODELS.parent / "tests" / "fixtures" / "stream"


@pytest.mark.parametrize(
    "name, streaming",
    [("tf215-stateful-lstm.h5", False), ("tf215-stateful-lstm.h5", True), ("k3-stateful-lstm.keras", True),
     ("causal-lstm-mha.keras", True), ("causal-conv-gru.keras", True), ("causal-attention-gru.keras", True),
     ("lstm64-mha.keras", True)],
)  # fmt: skip
def test_each_fixture_steps_200_steps_as_keras_stepped_them(tmp_path, name, streaming):
    """The reference is Keras's own: the stateful model called one step at a time (``steps`` in the .npz,
    saved by the library that wrote the file), or, for the causal models, Keras on each prefix."""
    source = FIXTURES / name
    ref = np.load(source.with_suffix(".npz"))
    args = ["--streaming", "--max-steps", "256"] if streaming else []
    done = run_cli("export", source, "-o", tmp_path / "m.onnx", *args)
    assert done.returncode == 0, done.stderr
    x = ref["x"]
    got, _, _ = _steps_of(tmp_path / "m.onnx", x)
    assert got.shape == ref["steps"].shape
    assert np.max(np.abs(got - ref["steps"])) < 1e-5


def test_a_stateful_fixture_runs_in_chunks_as_keras_ran_them(tmp_path):
    ref = np.load(FIXTURES / "k3-stateful-lstm.npz")
    done = run_cli("export", FIXTURES / "k3-stateful-lstm.keras", "-o", tmp_path / "m.onnx")
    assert done.returncode == 0, done.stderr
    got, _, _ = _steps_of(tmp_path / "m.onnx", ref["x"], chunk=int(ref["chunk"]))
    assert np.max(np.abs(got - ref["chunks"])) < 1e-5


def test_the_predictor_streams_an_exported_fixture_as_keras_stepped_it(tmp_path):
    """Predictor.stream() on the exporter's own files (a step model with a growing cache, a stateful model in
    chunks) against the Keras outputs saved with each fixture."""
    from edgeattn.runtime import Predictor

    ref = np.load(FIXTURES / "causal-lstm-mha.npz")
    done = run_cli("export", FIXTURES / "causal-lstm-mha.keras", "-o", tmp_path / "step.onnx", "--streaming")
    assert done.returncode == 0, done.stderr
    stream = Predictor(tmp_path / "step.onnx").stream()
    got = np.stack([stream.push(ref["x"][:, t]) for t in range(200)], axis=1)
    assert np.max(np.abs(got - ref["steps"])) < 1e-5
    stream.reset()
    one = np.stack([stream.push(ref["x"][1, t]) for t in range(20)])  # one sample, no batch axis
    assert np.max(np.abs(one - ref["steps"][1, :20])) < 1e-5

    ref = np.load(FIXTURES / "k3-stateful-lstm.npz")
    done = run_cli("export", FIXTURES / "k3-stateful-lstm.keras", "-o", tmp_path / "stateful.onnx")
    assert done.returncode == 0, done.stderr
    stream = Predictor(tmp_path / "stateful.onnx").stream()
    chunk = int(ref["chunk"])
    got = np.stack([stream.push(ref["x"][:, t : t + chunk]) for t in range(0, 200, chunk)], axis=1)
    assert np.max(np.abs(got - ref["chunks"])) < 1e-5


def test_a_stateful_bidirectional_model_carries_both_directions_like_keras(tmp_path):
    """Keras's stateful Bidirectional reads each chunk backwards from the backward state carried so far; the
    ONNX node's reverse direction starts from its initial state too. Keras's own chunk-by-chunk run decides."""
    keras.utils.set_random_seed(8)
    x_in = keras.Input(batch_shape=(2, None, 3), name="x")
    h = keras.layers.Bidirectional(keras.layers.LSTM(4, stateful=True, return_sequences=True), name="bi")(
        x_in
    )
    h = keras.layers.Bidirectional(keras.layers.GRU(3, stateful=True, return_sequences=True), name="bg")(h)
    model = keras.Model(x_in, keras.layers.Dense(1)(h))
    model.save(tmp_path / "m.keras")
    done = run_cli("export", tmp_path / "m.keras", "-o", tmp_path / "m.onnx")
    assert done.returncode == 0, done.stderr
    x = np.random.default_rng(9).normal(size=(2, 36, 3)).astype(np.float32)
    for layer in model.layers:
        if getattr(layer, "stateful", False):
            layer.reset_state()
    want = np.concatenate([np.asarray(model(x[:, t : t + 12])) for t in range(0, 36, 12)], axis=1)
    got, meta, _ = _steps_of(tmp_path / "m.onnx", x, chunk=12)
    assert [s["input"] for s in meta["states"]] == [
        "bi/forward_h", "bi/forward_c", "bi/backward_h", "bi/backward_c", "bg/forward_h", "bg/backward_h"
    ]  # fmt: skip
    assert np.max(np.abs(got - want)) < 1e-5
    proto = onnx.load(tmp_path / "m.onnx")
    assert [n.op_type for n in proto.graph.node].count("LSTM") == 1


def test_a_step_model_in_ort_format_streams_like_the_onnx_one(tmp_path):
    ref = np.load(FIXTURES / "causal-conv-gru.npz")
    done = run_cli("export", FIXTURES / "causal-conv-gru.keras", "-o", tmp_path / "step.ort", "--streaming")
    assert done.returncode == 0, done.stderr
    assert "ORT     same outputs as the ONNX graph" in done.stdout
    from edgeattn.runtime import Predictor

    stream = Predictor(tmp_path / "step.ort").stream()
    got = np.stack([stream.push(ref["x"][:, t]) for t in range(60)], axis=1)
    assert np.max(np.abs(got - ref["steps"][:, :60])) < 1e-5


def test_layers_after_a_many_to_one_layer_stream_and_a_static_input_is_refused(tmp_path):
    """After LSTM(return_sequences=False) there is no time axis: a LayerNormalization on axis 1 is per sample."""
    keras.utils.set_random_seed(6)
    x_in = keras.Input((None, 3), name="x")
    h = keras.layers.LayerNormalization(axis=1, name="norm")(keras.layers.LSTM(5, name="lstm")(x_in))
    keras.Model(x_in, keras.layers.Dense(1)(h)).save(tmp_path / "m.keras")
    done = run_cli("export", tmp_path / "m.keras", "-o", tmp_path / "m.onnx", "--streaming")
    assert done.returncode == 0, done.stderr
    static = keras.Input((4,), name="static")
    keras.Model(static, keras.layers.Dense(1)(static)).save(tmp_path / "s.keras")
    done = run_cli("export", tmp_path / "s.keras", "-o", tmp_path / "s.onnx", "--streaming")
    assert done.returncode == 2 and "input 'static' of shape (None, 4) has no time axis" in done.stderr
