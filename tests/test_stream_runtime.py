"""Streaming (issue #28): ``Predictor.stream()`` and ``Predictor.window()`` (edgeattn/stream.py) on small stream
models built here with onnx.helper by the file contract (``edgeattn.stream`` metadata), checked against an
independent reference: the same ONNX LSTM run over the whole sequence in one call of its full-sequence twin."""

from __future__ import annotations

import json
import threading

import numpy as np
import onnx
import pytest
from conftest import MODELS
from onnx import TensorProto, helper

from edgeattn.runtime import Predictor

SEED = MODELS / "seed.onnx"
F, H, D = 4, 16, 2  # features, LSTM units, Dense units
MAX_STEPS = 5  # the growing model's cap


def _lstm_weights(seed: int, features: int, hidden: int, outputs: int) -> list:
    rng = np.random.default_rng(seed)
    shapes = {"W": (1, 4 * hidden, features), "R": (1, 4 * hidden, hidden), "B": (1, 8 * hidden),
              "Wd": (hidden, outputs), "bd": (outputs,)}  # fmt: skip
    return [helper.make_tensor(n, TensorProto.FLOAT, s, (rng.standard_normal(s) * 0.4).astype(np.float32).ravel())
            for n, s in shapes.items()]  # fmt: skip


def lstm_model(
    kind: str, features: int = F, hidden: int = H, outputs: int = D, seed: int = 0, time=None, split=False
):
    """An LSTM(hidden) then Dense(outputs) on its last state. ``kind``: "full" (a whole-window model, no states;
    ``time`` its length or free), "step" (one step, states ``lstm/h`` and ``lstm/c``) or "stateful" (a chunk,
    the same states). Outputs: ``y`` (batch, outputs) from the last h, ``seq`` (batch, time, hidden) every h,
    then ``lstm/h_next``, ``lstm/c_next``. The three kinds with one seed hold the same weights. ``split``: two data
    inputs ``a`` and ``b`` of half the features each, joined into x."""
    f32 = TensorProto.FLOAT
    steps = 1 if kind == "step" else (time or "time")
    names = ["a", "b"] if split else ["x"]
    inputs = [helper.make_tensor_value_info(n, f32, ["batch", steps, features // len(names)]) for n in names]
    nodes = [helper.make_node("Concat", names, ["x"], axis=2)] if split else []
    nodes.append(helper.make_node("Transpose", ["x"], ["xt"], perm=[1, 0, 2]))
    lstm_in = ["xt", "W", "R", "B"]
    axes = [
        helper.make_tensor("zero", TensorProto.INT64, [1], [0]),
        helper.make_tensor("one", TensorProto.INT64, [1], [1]),
    ]
    if kind != "full":
        for s in ("h", "c"):
            inputs.append(helper.make_tensor_value_info(f"lstm/{s}", f32, ["batch", hidden]))
            nodes.append(helper.make_node("Unsqueeze", [f"lstm/{s}", "zero"], [f"{s}0"]))
        lstm_in += ["", "h0", "c0"]
    nodes += [
        helper.make_node("LSTM", lstm_in, ["Y", "Y_h", "Y_c"], hidden_size=hidden),
        helper.make_node("Squeeze", ["Y_h", "zero"], ["lstm/h_next"]),
        helper.make_node("Squeeze", ["Y_c", "zero"], ["lstm/c_next"]),
        helper.make_node("Gemm", ["lstm/h_next", "Wd", "bd"], ["y"]),
        helper.make_node("Squeeze", ["Y", "one"], ["Ys"]),
        helper.make_node("Transpose", ["Ys"], ["seq"], perm=[1, 0, 2]),
    ]
    outs = [helper.make_tensor_value_info("y", f32, ["batch", outputs]),
            helper.make_tensor_value_info("seq", f32, ["batch", steps, hidden])]  # fmt: skip
    if kind != "full":
        outs += [helper.make_tensor_value_info(f"lstm/{s}_next", f32, ["batch", hidden]) for s in ("h", "c")]
    graph = helper.make_graph(
        nodes, f"lstm_{kind}", inputs, outs, _lstm_weights(seed, features, hidden, outputs) + axes
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    if kind != "full":
        states = [{"input": f"lstm/{s}", "output": f"lstm/{s}_next", "layer": "lstm", "shape": [hidden],
                   "dtype": "float32", "grows": False} for s in ("h", "c")]  # fmt: skip
        meta = {"kind": kind, "max_steps": None, "inputs": names, "outputs": ["y", "seq"], "states": states}
        helper.set_model_props(model, {"edgeattn.stream": json.dumps(meta)})
    onnx.checker.check_model(model, full_check=True)
    return model


def growing_model(features: int = F, max_steps: int = MAX_STEPS):
    """A step model with a growing state: ``cache/key`` (batch, length, features) gets each step appended
    (Concat along axis 1), the last ``max_steps`` kept; ``y`` is the mean of what the cache holds."""
    f32, i64 = TensorProto.FLOAT, TensorProto.INT64
    consts = [helper.make_tensor("start", i64, [1], [-max_steps]), helper.make_tensor("end", i64, [1], [2**62]),
              helper.make_tensor("axis", i64, [1], [1])]  # fmt: skip
    nodes = [
        helper.make_node("Concat", ["cache/key", "x"], ["grown"], axis=1),
        helper.make_node("Slice", ["grown", "start", "end", "axis"], ["cache/key_next"]),
        helper.make_node("ReduceMean", ["cache/key_next"], ["y"], axes=[1], keepdims=0),
    ]
    inputs = [helper.make_tensor_value_info("x", f32, ["batch", 1, features]),
              helper.make_tensor_value_info("cache/key", f32, ["batch", "past", features])]  # fmt: skip
    outputs = [helper.make_tensor_value_info("y", f32, ["batch", features]),
               helper.make_tensor_value_info("cache/key_next", f32, ["batch", "length", features])]  # fmt: skip
    model = helper.make_model(helper.make_graph(nodes, "growing", inputs, outputs, consts),
                              opset_imports=[helper.make_opsetid("", 17)])  # fmt: skip
    state = {"input": "cache/key", "output": "cache/key_next", "layer": "cache", "shape": [None, features],
             "dtype": "float32", "grows": True}  # fmt: skip
    meta = {"kind": "step", "max_steps": max_steps, "inputs": ["x"], "outputs": ["y"], "states": [state]}
    helper.set_model_props(model, {"edgeattn.stream": json.dumps(meta)})
    onnx.checker.check_model(model, full_check=True)
    return model


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("stream")
    built = {"step": lstm_model("step"), "stateful": lstm_model("stateful"), "full": lstm_model("full"),
             "growing": growing_model(), "two": lstm_model("step", split=True)}  # fmt: skip
    paths = {}
    for name, model in built.items():
        paths[name] = folder / f"{name}.onnx"
        onnx.save(model, paths[name])
    return paths


def _seq(batch: int, steps: int, seed: int = 1, features: int = F) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, steps, features)).astype(np.float32)


def _full(models, x: np.ndarray) -> list:
    """The reference: the full-sequence twin run once over the whole sequence (y, seq)."""
    return Predictor(models["full"], io_binding=False).run(x)


# -- Stream -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("io_binding", [True, False])
def test_step_by_step_equals_one_run_of_the_whole_sequence(models, io_binding):
    x = _seq(3, 200)
    stream = Predictor(models["step"], io_binding=io_binding).stream()
    ys, seqs = [], []
    for t in range(200):
        ys.append(stream.push(x[:, t]))
        seqs.append(stream.outputs["seq"])  # a sequence output, its time axis gone: (batch, hidden)
    y, seq = _full(models, x)
    assert ys[-1].shape == (3, D) and seqs[-1].shape == (3, H)
    np.testing.assert_allclose(np.stack(seqs, axis=1), seq, atol=1e-5)
    np.testing.assert_allclose(ys[-1], y, atol=1e-5)
    np.testing.assert_allclose(ys[49], _full(models, x[:, :50])[0], atol=1e-5)  # the output for the prefix
    np.testing.assert_allclose(stream.state["lstm/h"], seq[:, -1], atol=1e-5)


def test_one_sample_and_the_three_step_forms_agree(models):
    x = _seq(1, 20)
    predictor = Predictor(models["step"])
    forms = [lambda t: x[0, t], lambda t: x[:, t], lambda t: x[:, t : t + 1], lambda t: x[0, t].tolist()]
    runs = []
    for form in forms:
        stream = predictor.stream()
        runs.append([stream.push(form(t)) for t in range(20)])
    assert runs[0][0].shape == (D,) and runs[1][0].shape == (1, D) and runs[2][0].shape == (1, D)
    y = _full(models, x)[0]
    for run in runs:
        np.testing.assert_allclose(np.reshape(run[-1], (1, D)), y, atol=1e-5)
    stream = predictor.stream()
    assert stream.push(x[0, 0].astype(np.float64)).dtype == np.float32  # converted as predict converts
    assert stream.push(x[0, 1]).shape == (D,)


@pytest.mark.parametrize("io_binding", [True, False])
def test_a_model_of_two_data_inputs_takes_a_dict(models, io_binding):
    x = _seq(2, 40, seed=9)
    stream = Predictor(models["two"], io_binding=io_binding).stream()
    for t in range(40):
        y = stream.push({"a": x[:, t, :2], "b": x[:, t, 2:]})
    np.testing.assert_allclose(y, _full(models, x)[0], atol=1e-5)
    with pytest.raises(ValueError, match=r"has 2 data inputs \(a, b\); push a dict"):
        stream.push(x[:, 0])
    with pytest.raises(ValueError, match=r"missing input.*: b"):
        stream.push({"a": x[:, 0, :2]})
    with pytest.raises(ValueError, match="one batch"):
        stream.push({"a": x[:, 0, :2], "b": x[0, 0, 2:]})


def test_stateful_chunks_equal_one_run_of_the_whole_sequence(models):
    x = _seq(2, 60, seed=3)
    stream = Predictor(models["stateful"]).stream()
    seqs, start = [], 0
    for length in (7, 1, 30, 7, 15):  # chunks of any length, and one of the same length again
        assert stream.push(x[:, start : start + length]).shape == (2, D)  # y: on the chunk's last step
        seqs.append(stream.outputs["seq"])
        start += length
    y, seq = _full(models, x)
    np.testing.assert_allclose(np.concatenate(seqs, axis=1), seq, atol=1e-5)
    np.testing.assert_allclose(stream.outputs["y"], y, atol=1e-5)
    one = Predictor(models["stateful"]).stream()
    assert one.push(x[0, :10]).shape == (D,)  # (time, features): one sample


def test_a_growing_state_starts_empty_and_stops_at_its_cap(models):
    x = _seq(2, 12, seed=4)
    stream = Predictor(models["growing"]).stream()
    assert stream.state == {}
    for t in range(12):
        y = stream.push(x[:, t])
        np.testing.assert_allclose(y, x[:, max(0, t + 1 - MAX_STEPS) : t + 1].mean(axis=1), atol=1e-6)
        assert stream.state["cache/key"].shape == (2, min(t + 1, MAX_STEPS), F)
    stream.reset()
    assert stream.state["cache/key"].shape == (2, 0, F)
    np.testing.assert_allclose(stream.push(x[:, 0]), x[:, 0], atol=1e-6)


@pytest.mark.parametrize("name", ["step", "growing"])
def test_reset_goes_back_to_zeros(models, name):
    x = _seq(2, 30, seed=5)
    stream = Predictor(models[name]).stream()
    first = [stream.push(x[:, t]) for t in range(10)]
    for t in range(10, 29):  # an odd number of pushes in all: the states sit in the other buffer
        stream.push(x[:, t])
    stream.reset()
    # zeros again (a growing cache: empty again)
    assert all(
        not a.any() and (a.shape[1] > 0) != ("cache" in n) for n, a in stream.state.items() if a.ndim > 1
    )
    again = [stream.push(x[:, t]) for t in range(10)]
    np.testing.assert_array_equal(np.stack(again), np.stack(first))


@pytest.mark.parametrize("binding", [True, False])
def test_state_and_outputs_are_copies(models, binding):
    x = _seq(1, 3)
    stream = Predictor(models["step"], io_binding=binding).stream()
    stream.push(x[:, 0])
    y = stream.push(x[:, 1])
    state, outputs = stream.state, stream.outputs
    state["lstm/h"][...] = 99.0
    outputs["seq"][...] = 99.0
    y[...] = 99.0  # what push returns is the caller's: neither outputs nor the next push is disturbed
    assert not (stream.state["lstm/h"] == 99).any()
    assert not any((v == 99).any() for v in stream.outputs.values())
    np.testing.assert_allclose(stream.push(x[:, 2]), _full(models, x)[0], atol=1e-5)


def test_streams_of_one_predictor_in_threads_are_independent(models):
    predictor = Predictor(models["step"])
    inputs = {k: _seq(1 + k % 2, 150, seed=10 + k) for k in range(6)}
    got, errors = {}, []

    def work(k):
        try:
            stream = predictor.stream()
            seqs = []
            for t in range(150):
                stream.push(inputs[k][:, t])
                seqs.append(stream.outputs["seq"])
            got[k] = np.stack(seqs, axis=1)
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in inputs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    for k, x in inputs.items():
        np.testing.assert_allclose(got[k], _full(models, x)[1], atol=1e-5)


def test_the_batch_is_set_by_the_first_push_until_reset(models):
    stream = Predictor(models["step"]).stream()
    stream.push(_seq(2, 1)[:, 0])
    with pytest.raises(ValueError, match=r"runs batch 2 \(set by its first push\), got batch 3: call reset"):
        stream.push(_seq(3, 1)[:, 0])
    with pytest.raises(ValueError, match="got batch 1"):
        stream.push(_seq(1, 1)[0, 0])  # one sample is batch 1
    stream.reset()
    x = _seq(3, 1)
    np.testing.assert_allclose(stream.push(x[:, 0]), _full(models, x)[0], atol=1e-5)


def test_push_refuses_what_does_not_fit(models):
    stream = Predictor(models["step"]).stream()
    with pytest.raises(ValueError, match=r"takes one step of shape \(4,\).*got shape \(5,\)"):
        stream.push(np.zeros(5, np.float32))
    with pytest.raises(ValueError, match="one step at a time"):
        stream.push(np.zeros((1, 2, F), np.float32))
    with pytest.raises(ValueError, match=r"holds 1 NaN or infinite value\(s\)"):
        stream.push(np.array([0, np.nan, 0, 0], np.float32))
    with pytest.raises(TypeError, match="got a string"):
        stream.push("1, 2, 3, 4")
    with pytest.raises(ValueError, match="a Stream carries its states"):
        stream.push({"x": np.zeros((1, F), np.float32), "lstm/h": np.zeros((1, H), np.float32)})
    with pytest.raises(ValueError, match=r"takes a chunk of shape \(time, \*\(4,\)\)"):
        Predictor(models["stateful"]).stream().push(np.zeros(F, np.float32))
    assert stream.state == {}  # nothing ran
    stream.push(np.zeros(F, np.float32))
    with pytest.raises(ValueError, match="NaN"):  # a shape already bound: the bound lane checks too
        stream.push(np.array([0, 0, np.inf, 0], np.float32))


def test_a_model_without_stream_metadata_says_how_to_get_one(models):
    with pytest.raises(ValueError) as info:
        Predictor(SEED).stream()
    message = str(info.value)
    assert "seed.onnx is not a stream model" in message and "edgeattn export --streaming" in message
    assert "Predictor.window(T)" in message


def test_metadata_that_does_not_fit_the_graph_is_refused_at_load(models, tmp_path):
    model = onnx.load(models["step"])
    meta = json.loads(model.metadata_props[0].value)
    meta["states"][0]["shape"] = [H + 1]
    helper.set_model_props(model, {"edgeattn.stream": json.dumps(meta)})
    onnx.save(model, tmp_path / "bad.onnx")
    with pytest.raises(ValueError, match=r"bad.onnx: its edgeattn.stream metadata does not fit.*'lstm/h'"):
        Predictor(tmp_path / "bad.onnx")
    meta["states"][0]["shape"] = [H]
    helper.set_model_props(model, {"edgeattn.stream": json.dumps({**meta, "states": meta["states"][:1]})})
    onnx.save(model, tmp_path / "bad.onnx")
    with pytest.raises(ValueError, match="do not cover"):
        Predictor(tmp_path / "bad.onnx")


# -- predict and run on a stream model ------------------------------------------------------------------------


def test_predict_on_a_stream_model_starts_the_states_left_out_at_zeros(models):
    x = _seq(3, 1, seed=6)
    predictor = Predictor(models["step"])
    y = predictor.predict(x)
    np.testing.assert_allclose(y, _full(models, x)[0], atol=1e-5)
    h = np.full((3, H), 0.5, np.float32)
    outputs = predictor.run({"x": x, "lstm/h": h})  # c left out: zeros
    want = predictor.run({"x": x, "lstm/h": h, "lstm/c": np.zeros((3, H), np.float32)})
    for a, b in zip(outputs, want):
        np.testing.assert_array_equal(a, b)
    assert len(outputs) == 4
    growing = Predictor(models["growing"])
    np.testing.assert_allclose(growing.predict(x), x[:, 0], atol=1e-6)  # an empty cache: the mean of x alone
    with pytest.raises(ValueError, match="missing input"):
        predictor.run({"lstm/h": h})


# -- Window -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("io_binding", [True, False])
@pytest.mark.parametrize("batch", [None, 1, 3])
def test_a_window_predicts_exactly_what_predict_gives_on_the_last_steps(io_binding, batch):
    predictor = Predictor(SEED, io_binding=io_binding)
    window = predictor.window()
    assert window.steps == 10
    xs = np.random.default_rng(7).random((batch or 1, 45, 1), dtype=np.float32)
    for t in range(45):
        y = window.push(xs[0, t] if batch is None else xs[:, t])
        assert window.ready is (t >= 9)
        if t < 9:
            assert y is None and window.outputs == {}
            continue
        want, weights = predictor.predict(xs[:, t - 9 : t + 1], return_attention=True)
        np.testing.assert_array_equal(y, want[0] if batch is None else want)
        np.testing.assert_array_equal(
            window.outputs["attention_weights"], weights[0] if batch is None else weights
        )
    window.reset()
    assert not window.ready and window.push(xs[0, 0] if batch is None else xs[:, 0]) is None


def test_a_window_of_a_free_time_axis_needs_its_length(models):
    predictor = Predictor(models["full"])
    with pytest.raises(ValueError, match=r"full.onnx's time axis is free \(time\): give the length"):
        predictor.window()
    window = predictor.window(7)
    x = _seq(2, 20, seed=8)
    for t in range(20):
        y = window.push(x[:, t])
    np.testing.assert_array_equal(y, predictor.predict(x[:, -7:]))
    np.testing.assert_allclose(y, _full(models, x[:, -7:])[0], atol=1e-6)


def test_window_refusals():
    predictor = Predictor(SEED)
    with pytest.raises(ValueError, match=r"takes windows of 10 steps .*, not 12"):
        predictor.window(12)
    window = predictor.window(10)
    window.push(np.zeros((2, 1), np.float32))
    with pytest.raises(ValueError, match="runs batch 2"):
        window.push(np.zeros(1, np.float32))
    with pytest.raises(ValueError, match=r"takes one step of shape \(1,\)"):
        window.push(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match="NaN"):
        window.push(np.full((2, 1), np.inf, np.float32))
    window.reset()
    assert window.push(np.zeros(1, np.float32)) is None  # after reset, another batch
    with pytest.raises(ValueError, match="NaN"):  # a shape already seen: the bound lane checks too
        window.push(np.array([np.nan], np.float32))


def test_window_refuses_a_stream_model(models):
    with pytest.raises(ValueError, match=r"step.onnx is a stream model \(step\): use Predictor.stream\(\)"):
        Predictor(models["step"]).window(5)
