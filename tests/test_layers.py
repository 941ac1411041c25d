"""The Keras layers against NumPy references of their formulas."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from edgeattn.convert.layers import Attention, NadarayaWatson, with_attention_output


def softmax(z, axis=-1):
    z = z - z.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def attention_reference(h, layer):
    """The formula of the issue, written the straightforward way (Dense over every state, then dot with h_t)."""
    h = h.astype(np.float64)
    h_t = h[:, -1, :]
    if layer.score == "luong":
        w = np.asarray(layer.luong_w.kernel, dtype=np.float64)
        score_first_part = h @ w
        score = np.einsum("bd,btd->bt", h_t, score_first_part)
    else:
        w1 = np.asarray(layer.bahdanau_w1.kernel, dtype=np.float64)
        w2 = np.asarray(layer.bahdanau_w2.kernel, dtype=np.float64)
        v = np.asarray(layer.bahdanau_v.kernel, dtype=np.float64)
        score = (np.tanh((h_t @ w1)[:, None, :] + h @ w2) @ v)[..., 0]
    weights = softmax(score, axis=1)
    context = np.einsum("bt,btd->bd", weights, h)
    wc = np.asarray(layer.attention_vector.kernel, dtype=np.float64)
    return np.tanh(np.concatenate([context, h_t], axis=1) @ wc), weights


@pytest.mark.parametrize("score", ["luong", "bahdanau"])
def test_attention_matches_numpy_reference(score):
    rng = np.random.default_rng(0)
    h = rng.normal(size=(5, 7, 6)).astype(np.float32)
    layer = Attention(units=4, score=score)
    out, weights = layer(h, return_attention_scores=True)
    ref_out, ref_weights = attention_reference(h, layer)
    assert out.shape == (5, 4)
    assert weights.shape == (5, 7)
    np.testing.assert_allclose(np.asarray(out), ref_out, atol=1e-5)
    np.testing.assert_allclose(np.asarray(weights), ref_weights, atol=1e-6)
    np.testing.assert_allclose(np.asarray(layer(h)), ref_out, atol=1e-5)


def test_attention_weight_layout_matches_the_attention_package():
    luong = Attention(units=3)
    luong.build((None, 5, 8))
    assert [w.path.split("/", 1)[1] for w in luong.weights] == ["luong_w/kernel", "attention_vector/kernel"]
    assert [tuple(w.shape) for w in luong.weights] == [(8, 8), (16, 3)]
    bahdanau = Attention(units=3, score="bahdanau")
    bahdanau.build((None, 5, 8))
    names = {w.path.split("/", 1)[1] for w in bahdanau.weights}
    assert names == {
        "bahdanau_v/kernel",
        "bahdanau_w1/kernel",
        "bahdanau_w2/kernel",
        "attention_vector/kernel",
    }


def test_attention_rejects_bad_arguments():
    with pytest.raises(ValueError, match="score must be one of"):
        Attention(score="dot")
    with pytest.raises(ValueError, match="positive"):
        Attention(units=0)


def test_attention_survives_a_keras_file_round_trip(tmp_path):
    from edgeattn.convert.tasks import build_seed_model

    model = build_seed_model(seed=3)
    x = np.random.default_rng(3).random((4, 10, 1), dtype=np.float32)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)  # no custom_objects: the layer is registered
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-7)
    assert loaded.get_layer("attention").get_config()["units"] == 32


def test_with_attention_output_adds_weights_that_are_distributions():
    from edgeattn.convert.tasks import build_seed_model

    model = build_seed_model(seed=4)
    both = with_attention_output(model)
    x = np.random.default_rng(4).random((3, 10, 1), dtype=np.float32)
    y, w = both(x)
    np.testing.assert_allclose(np.asarray(y), np.asarray(model(x)), atol=1e-6)
    assert w.shape == (3, 10)
    np.testing.assert_allclose(np.asarray(w).sum(axis=1), 1.0, atol=1e-6)


def test_nadaraya_watson_reproduces_the_seed_formula():
    # The seed's worked example: f(57) with keys 51, 56, 58 and values v1, v2, v3.
    q = np.array([[57.0]], dtype=np.float32)
    k = np.array([[51.0, 56.0, 58.0]], dtype=np.float32)
    v = np.array([[1.0, 2.0, 3.0]], dtype=np.float32)
    out, weights = NadarayaWatson()([q, k, v], return_attention_scores=True)
    expected = softmax(-0.5 * (57.0 - np.array([51.0, 56.0, 58.0])) ** 2)
    np.testing.assert_allclose(np.asarray(weights)[0, 0], expected, atol=1e-6)
    np.testing.assert_allclose(np.asarray(out)[0, 0], expected @ np.array([1.0, 2.0, 3.0]), atol=1e-6)
