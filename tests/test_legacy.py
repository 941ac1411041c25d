"""Real users' files: Keras 2 ``.h5`` saved by TF 2.15 with the ``attention`` package, and every recurrent
layer kind exported as one fused node.

The ``.h5`` fixtures and the outputs TF 2.15 computed on them were made by scripts/make_legacy_fixtures.py in
a side environment (tensorflow-cpu 2.15.1, attention 4.1 / 5.0.0); the comparison is with those stored
outputs, not with a re-implementation.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import ROOT, run_cli

from edgeattn.convert.export import ExportOptions, export
from edgeattn.convert.verify import verify_against_keras
from edgeattn.core.errors import UnsupportedModelError
from edgeattn.graphs import graph

LEGACY = ROOT / "tests" / "fixtures" / "legacy"
FIXTURES = sorted(p.stem for p in LEGACY.glob("a*.h5"))
TF215_ATOL = 2e-6  # what the fixtures reach is 2.4e-07 at most (float32 over a few layers)


def test_fixtures_are_there():
    assert len(FIXTURES) == 9, FIXTURES


@pytest.mark.parametrize("name", FIXTURES)
def test_keras2_file_exports_fused_and_matches_tf215(name, tmp_path):
    out = tmp_path / f"{name}.onnx"
    result = export(LEGACY / f"{name}.h5", out)
    model = onnx.load(out)
    ops = {n.op_type for n in model.graph.node}
    assert ops & graph.RECURRENT_OPS
    assert not ops & graph.LOOP_OPS
    assert {n.domain for n in model.graph.node} <= {"", "ai.onnx"}
    assert result.parity.max_abs < 1e-5

    stored = np.load(LEGACY / f"{name}.npz")
    session = ort.InferenceSession(out, providers=["CPUExecutionProvider"])
    (y,) = session.run(["y"], {session.get_inputs()[0].name: stored["x"]})
    assert np.abs(y - stored["y"]).max() <= TF215_ATOL
    assert verify_against_keras(out, LEGACY / f"{name}.h5")  # what `edgeattn verify --keras` runs


def test_attention_41_weights_load_by_their_old_names():
    from edgeattn.convert.layers import Attention
    from edgeattn.convert.loading import load_model

    model = load_model(LEGACY / "a41-lstm-luong.h5").model
    layer = next(la for la in model.layers if isinstance(la, Attention))
    assert layer.score == "luong"
    import h5py

    with h5py.File(LEGACY / "a41-lstm-luong.h5") as f:
        stored = f["model_weights"][layer.name][f"{layer.name}/attention_score_vec/kernel:0"][()]
    np.testing.assert_array_equal(layer.luong_w.kernel.numpy(), stored)


def test_cli_export_then_verify_on_a_keras2_bidirectional_gru(tmp_path):
    src = LEGACY / "a500-bigru-bahdanau.h5"
    out = tmp_path / "bigru.onnx"
    done = run_cli("export", src, "-o", out)
    assert done.returncode == 0, done.stderr
    assert "GRU 1" in done.stdout and "Loop" not in done.stdout
    checked = run_cli("verify", out, "--keras", src)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "verify: pass" in checked.stdout


def test_masked_embedding_is_refused_by_name(tmp_path):
    out = tmp_path / "mask.onnx"
    with pytest.raises(UnsupportedModelError, match=r"Embedding layer 'embedding.*' has mask_zero=True"):
        export(LEGACY / "mask.h5", out)
    assert not out.exists()


def _keras3(tmp_path: Path, name: str, input_shape, *layers, dtype="float32") -> Path:
    import keras

    inputs = keras.Input(input_shape, dtype=dtype, name="x")
    h = inputs
    for layer in layers:
        h = layer(h)
    model = keras.Model(inputs, h)
    rng = np.random.default_rng(0)  # weights away from their initial values, as after training
    model.set_weights([rng.normal(0, 0.4, w.shape).astype(w.dtype) for w in model.get_weights()])
    path = tmp_path / f"{name}.keras"
    model.save(path)
    return path


def _zoo():
    from keras import layers as L

    from edgeattn.convert.layers import Attention

    return {
        "gru-reset-after": (
            (None, 3),
            [L.GRU(8, return_sequences=True), Attention(6), L.Dense(1)],
            {"GRU": 1},
        ),
        "gru-reset-before": (
            (10, 3),
            [
                L.GRU(8, reset_after=False, return_sequences=True),
                Attention(6),
                L.Dense(1, activation="sigmoid"),
            ],
            {"GRU": 1},
        ),
        "simplernn-relu": ((10, 3), [L.SimpleRNN(8, activation="relu"), L.Dense(1)], {"RNN": 1}),
        "bidirectional-gru": (
            (None, 3),
            [
                L.Bidirectional(L.GRU(5, return_sequences=True)),
                Attention(6),
                L.Dense(3, activation="softmax"),
            ],
            {"GRU": 1},
        ),
        "bidirectional-simplernn-sum": (
            (10, 3),
            [
                L.Bidirectional(L.SimpleRNN(5, return_sequences=True), merge_mode="sum"),
                Attention(4),
                L.Dense(1),
            ],
            {"RNN": 1},
        ),
        "bidirectional-gru-mul-lstm-ave": (
            (10, 3),
            [
                L.Bidirectional(L.GRU(5, return_sequences=True), merge_mode="mul"),
                L.Bidirectional(L.LSTM(4, return_sequences=True), merge_mode="ave"),
                Attention(4),
                L.Dense(1),
            ],
            {"GRU": 1, "LSTM": 1},
        ),
        "stacked-gru-lstm-simplernn": (
            (None, 3),
            [
                L.GRU(6, return_sequences=True),
                L.LSTM(5, return_sequences=True, go_backwards=True),
                L.SimpleRNN(4, return_sequences=True),
                Attention(3),
                L.Dense(1),
            ],
            {"GRU": 1, "LSTM": 1, "RNN": 1},
        ),
    }


@pytest.mark.parametrize("name", list(_zoo()))
def test_every_recurrent_kind_becomes_one_fused_node(name, tmp_path):
    from edgeattn.convert.layers import Attention

    shape, layers, fused = _zoo()[name]
    src = _keras3(tmp_path, name, shape, *layers)
    with_weights = any(isinstance(la, Attention) for la in layers)
    result = export(src, tmp_path / "out.onnx", ExportOptions(attention_weights=with_weights))
    histogram = result.summary.op_histogram
    assert {op: n for op, n in histogram.items() if op in graph.RECURRENT_OPS} == fused
    assert not set(histogram) & graph.LOOP_OPS
    # Keras against onnxruntime, here (not the export's own figure), on inputs the export did not see
    import keras

    model = keras.saving.load_model(src)
    x = np.random.default_rng(42).normal(0, 1, (5, *[d or 9 for d in shape])).astype(np.float32)
    session = ort.InferenceSession(tmp_path / "out.onnx", providers=["CPUExecutionProvider"])
    got = session.run(None, {"x": x})[0]
    assert np.abs(got - np.asarray(keras.ops.convert_to_numpy(model(x)))).max() <= 1e-5


def test_keras3_embedding_bilstm_bahdanau_on_a_free_time_axis(tmp_path):
    from keras import layers as L

    from edgeattn.convert.layers import Attention

    src = _keras3(
        tmp_path,
        "text",
        (None,),
        L.Embedding(50, 8),
        L.Bidirectional(L.LSTM(6, return_sequences=True)),
        Attention(5, score="bahdanau"),
        L.Dropout(0.3),
        L.Dense(4, activation="softmax"),
        dtype="int32",
    )
    out = tmp_path / "text.onnx"
    done = run_cli("export", src, "-o", out)
    assert done.returncode == 0, done.stderr
    model = onnx.load(out)
    assert [n.op_type for n in model.graph.node].count("LSTM") == 1
    lstm = next(n for n in model.graph.node if n.op_type == "LSTM")
    assert (
        onnx.helper.get_attribute_value(next(a for a in lstm.attribute if a.name == "direction"))
        == b"bidirectional"
    )
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param for d in dims] == ["batch", "time"]
    checked = run_cli("verify", out, "--keras", src, "--lengths", "6,19", "--json", "-")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "time 6" in checked.stdout and "time 19" in checked.stdout


def test_an_activation_a_fused_node_cannot_hold_is_refused_by_name(tmp_path):
    from keras import layers as L

    src = _keras3(tmp_path, "elu", (10, 3), L.GRU(4, activation="elu", name="odd_gru"), L.Dense(1))
    with pytest.raises(UnsupportedModelError, match="'odd_gru' uses activation='elu'"):
        export(src, tmp_path / "elu.onnx")


def test_keras3_h5_multi_input_and_timedistributed(tmp_path):
    """Keras 3 .h5 names edgeattn's classes 'edgeattn>Attention'; TimeDistributed(Dense) must not become a Loop."""
    import keras
    from keras import layers as L

    from edgeattn.convert.layers import Attention

    a, b = keras.Input((12, 3), name="a"), keras.Input((None, 2), name="b")
    h = L.LSTM(8, return_sequences=True)(L.TimeDistributed(L.Dense(4))(a))
    g = L.GRU(5)(b)
    model = keras.Model([a, b], L.Dense(1)(L.Concatenate()([Attention(4)(h), g])))
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(0, 0.4, w.shape).astype(w.dtype) for w in model.get_weights()])
    src = tmp_path / "two-inputs.h5"
    model.save(src)
    result = export(src, tmp_path / "two-inputs.onnx")
    assert [name for name, _, _ in result.summary.inputs] == ["a", "b"]
    histogram = result.summary.op_histogram
    assert histogram.get("LSTM") == 1 and histogram.get("GRU") == 1 and not set(histogram) & graph.LOOP_OPS
    # Keras (the model as built here) against onnxruntime, on inputs of this test's own, b at several lengths
    import onnxruntime as ort

    session = ort.InferenceSession(str(tmp_path / "two-inputs.onnx"), providers=["CPUExecutionProvider"])
    for batch, length in ((1, 3), (5, 12), (9, 40)):
        feed = {
            "a": rng.normal(0, 2, (batch, 12, 3)).astype(np.float32),
            "b": rng.normal(0, 2, (batch, length, 2)).astype(np.float32),
        }
        want = np.asarray(model([feed["a"], feed["b"]]))
        got = session.run(None, feed)[0]
        assert got.shape == want.shape == (batch, 1)
        assert np.abs(got - want).max() < 1e-5, (batch, length)
