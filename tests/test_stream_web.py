"""Streaming in JavaScript (issue #28): edgeattn.js's ``stream()`` and ``window(T)`` in a real headless Chromium
(onnxruntime-web) and under the system ``node`` (onnxruntime-node, through examples/node/predict.mjs --stream),
against Python onnxruntime on a whole-sequence twin as the independent reference.

The stream models are built here with ``onnx.helper`` to the file contract (metadata ``edgeattn.stream``), so the
tests do not wait on the exporter: an ONNX ``LSTM`` one step per run with its ``lstm/h``, ``lstm/c`` states, the
same LSTM as a "stateful" chunk model, its whole-sequence twin (the same weights over (batch, T, F), no states),
and a model whose state grows (a key cache concatenated along axis 1 from length 0, capped at MAX_STEPS).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading

import numpy as np
import onnxruntime as ort
import pytest
from conftest import MODELS, ORT_DIST, ROOT, need, run_cli

from edgeattn.deploy import web

ATOL = 1e-5
F, H, OUT = 3, 6, 4  # features, LSTM units, outputs per step
MAX_STEPS = 8  # the growing model's cache cap
STEPS = 30
NODE_EXAMPLE = ROOT / "examples" / "node" / "predict.mjs"
STREAM_KEY = "edgeattn.stream"


# -- the models, to the contract -------------------------------------------------------------------------------


def _save(graph, path, stream=None, golden=None):
    import onnx
    from onnx import helper

    from edgeattn.runtime import GOLDEN_KEY, encode_array

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    if stream is not None:
        model.metadata_props.add(key=STREAM_KEY, value=json.dumps(stream))
    if golden is not None:
        inputs, outputs = golden
        blob = {
            "inputs": {k: encode_array(v) for k, v in inputs.items()},
            "outputs": {k: encode_array(v) for k, v in outputs.items()},
            "atol": 1e-5,
        }
        model.metadata_props.add(key=GOLDEN_KEY, value=json.dumps(blob))
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)
    return path


def lstm_model(path, kind):
    """kind "full": x (batch, T, F) -> prediction (batch, T, OUT) (every step), last (batch, 1) (the last step's);
    "step": x (batch, 1, F) and the states lstm/h, lstm/c (batch, H) -> the same for one step, plus lstm/h_next and
    lstm/c_next; "stateful": x (batch, T, F) and the states -> a chunk's outputs, plus the states."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = {
        "W": rng.normal(0, 0.5, (1, 4 * H, F)),
        "R": rng.normal(0, 0.5, (1, 4 * H, H)),
        "B": rng.normal(0, 0.1, (1, 8 * H)),
        "Wo": rng.normal(0, 0.5, (H, OUT)),
        "Wl": rng.normal(0, 0.5, (H, 1)),
    }
    inits = [numpy_helper.from_array(v.astype(np.float32), k) for k, v in weights.items()]
    inits += [numpy_helper.from_array(np.array([i], np.int64), n) for i, n in ((0, "zero"), (1, "one"))]
    value = helper.make_tensor_value_info
    time = 1 if kind == "step" else "time"
    inputs = [value("x", TensorProto.FLOAT, ["batch", time, F])]
    outputs = [
        value("prediction", TensorProto.FLOAT, ["batch", time, OUT]),
        value("last", TensorProto.FLOAT, ["batch", 1]),
    ]
    nodes = [helper.make_node("Transpose", ["x"], ["x_tbf"], perm=[1, 0, 2])]
    lstm_inputs = ["x_tbf", "W", "R", "B"]
    if kind != "full":
        inputs += [value(f"lstm/{s}", TensorProto.FLOAT, ["batch", H]) for s in "hc"]
        nodes += [helper.make_node("Unsqueeze", [f"lstm/{s}", "zero"], [f"{s}0"]) for s in "hc"]
        lstm_inputs += ["", "h0", "c0"]
        outputs += [value(f"lstm/{s}_next", TensorProto.FLOAT, ["batch", H]) for s in "hc"]
    nodes += [
        helper.make_node("LSTM", lstm_inputs, ["Y", "Y_h", "Y_c"], hidden_size=H),
        helper.make_node("Squeeze", ["Y", "one"], ["Y_tbh"]),  # (T, 1, batch, H) -> (T, batch, H)
        helper.make_node("Transpose", ["Y_tbh"], ["Y_bth"], perm=[1, 0, 2]),
        helper.make_node("MatMul", ["Y_bth", "Wo"], ["prediction"]),
        helper.make_node("Squeeze", ["Y_h", "zero"], ["lstm/h_next"]),
        helper.make_node("Squeeze", ["Y_c", "zero"], ["lstm/c_next"]),
        helper.make_node("MatMul", ["lstm/h_next", "Wl"], ["last"]),
    ]
    stream = None
    if kind != "full":
        states = [
            {"input": f"lstm/{s}", "output": f"lstm/{s}_next", "layer": "lstm", "shape": [H], "dtype": "float32",
             "grows": False}
            for s in "hc"
        ]  # fmt: skip
        stream = {
            "kind": kind,
            "max_steps": None,
            "inputs": ["x"],
            "outputs": ["prediction", "last"],
            "states": states,
        }
    golden = None
    if kind == "step" and path.stem.endswith("golden"):  # one step from the initial state, states not given
        x = np.random.default_rng(9).random((2, 1, F), dtype=np.float32)
        full = ort.InferenceSession(lstm_model(path.with_name("twin.onnx"), "full")).run(None, {"x": x})
        golden = ({"x": x}, {"prediction": full[0], "last": full[1]})
    return _save(helper.make_graph(nodes, f"lstm-{kind}", inputs, outputs, inits), path, stream, golden)


def growing_model(path):
    """x (batch, 1, 2) and the cache mem/key (batch, n, 2) -> total (batch, 2), the sum over the cache after this
    step, and mem/key_next (batch, min(n + 1, MAX_STEPS), 2): the cache grows from length 0."""
    from onnx import TensorProto, helper, numpy_helper

    value = helper.make_tensor_value_info
    nodes = [
        helper.make_node("Concat", ["mem/key", "x"], ["both"], axis=1),
        helper.make_node("Slice", ["both", "start", "end", "axis"], ["mem/key_next"]),  # the last MAX_STEPS
        helper.make_node("ReduceSum", ["mem/key_next", "axis"], ["total"], keepdims=0),
    ]
    inits = [
        numpy_helper.from_array(np.array([v], np.int64), n)
        for n, v in (("start", -MAX_STEPS), ("end", 2**62), ("axis", 1))
    ]
    graph = helper.make_graph(
        nodes, "growing",
        [value("x", TensorProto.FLOAT, ["batch", 1, 2]), value("mem/key", TensorProto.FLOAT, ["batch", "n", 2])],
        [value("total", TensorProto.FLOAT, ["batch", 2]), value("mem/key_next", TensorProto.FLOAT, ["batch", "n_next", 2])],
        inits,
    )  # fmt: skip
    state = {"input": "mem/key", "output": "mem/key_next", "layer": "mem", "shape": [None, 2], "dtype": "float32",
             "grows": True}  # fmt: skip
    stream = {
        "kind": "step",
        "max_steps": MAX_STEPS,
        "inputs": ["x"],
        "outputs": ["total"],
        "states": [state],
    }
    return _save(graph, path, stream)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("stream-models")
    paths = {kind: lstm_model(folder / f"{kind}.onnx", kind) for kind in ("full", "step", "stateful")}
    paths["step-golden"] = lstm_model(folder / "step-golden.onnx", "step")
    paths["grow"] = growing_model(folder / "grow.onnx")
    paths["seed"] = MODELS / "seed.onnx"
    return paths


def full_twin(models, x):
    """The reference: Python onnxruntime on the whole sequence (no states): prediction (B, T, OUT) at every step and,
    at every step t, `last` of the prefix x[:, :t+1] (B, T, 1)."""
    session = ort.InferenceSession(models["full"], providers=["CPUExecutionProvider"])
    prediction = session.run(None, {"x": x})[0]
    last = np.stack([session.run(None, {"x": x[:, : t + 1]})[1] for t in range(x.shape[1])], axis=1)
    return prediction, last


def sequence(batch, seed, steps=STEPS, features=F):
    return np.random.default_rng(seed).normal(0, 1, (batch, steps, features)).astype(np.float32)


def growing_reference(x):
    return np.stack([x[:, max(0, t - MAX_STEPS + 1) : t + 1].sum(axis=1) for t in range(x.shape[1])], axis=1)


def window_reference(x, length):
    session = ort.InferenceSession(MODELS / "seed.onnx", providers=["CPUExecutionProvider"])
    return np.stack(
        [session.run(None, {"x": x[:, t - length + 1 : t + 1]})[0] for t in range(length - 1, x.shape[1])], 1
    )


def array(result):
    return np.array(result["data"], np.float64).reshape(result["dims"])


def stacked(results, name):
    """Per-push outputs ({name: {dims, data}}) stacked on axis 1 (batched) or 0 (unbatched)."""
    arrays = [array(r[name]) for r in results]
    return np.stack(arrays, axis=1 if arrays[0].ndim >= 2 else 0)


# -- Chromium --------------------------------------------------------------------------------------------------

# Runs `ops` on streams of one model in the page: {id, push: value} or {id, reset: true}; `window`: T for windows
# over a whole-window model. `url`: a model file of the site, loaded with EdgeAttn.fromBytes; null: the page's own.
# `parallel`: all pushes issued at once (each stream must keep its own order). Returns each op's outputs (or null).
RUN_OPS = """async ({url, window: T, ops, parallel}) => {
  const { EdgeAttn } = window.edgeattn;
  window.__models = window.__models || {};
  const load = async () => EdgeAttn.fromBytes(new Uint8Array(await (await fetch(url)).arrayBuffer()));
  const model = url ? (window.__models[url] = window.__models[url] || await load()) : window.edgeattn.model;
  const streams = {};
  const get = (id) => streams[id] || (streams[id] = T ? model.window(T) : model.stream());
  const run = async (op) => {
    const s = get(op.id || 0);
    if (op.reset) { await s.reset(); return null; }
    const r = await s.push(op.push);
    return r && { ...r.outputs, __states: s.states && Object.fromEntries(Object.entries(s.states).map(([k, v]) => [k, v.dims])) };
  };
  if (parallel) return Promise.all(ops.map(run));
  const out = [];
  for (const op of ops) out.push(await run(op));
  return out;
}"""


class Site:
    """The `edgeattn web` site of the step model (with a reference set), the other models beside it, served and
    opened once for the module."""

    def __init__(self, browser, folder):
        self.httpd = web.server(folder, 0)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.browser = browser
        self.page = self.open()

    def open(self, path=""):
        page = self.browser.new_page()
        page.goto(self.url + path)
        page.wait_for_selector("body[data-ready=true]", timeout=60_000)
        return page

    def ops(self, ops, url=None, window=None, parallel=False):
        return self.page.evaluate(RUN_OPS, {"url": url, "window": window, "ops": ops, "parallel": parallel})

    def close(self):
        self.page.close()
        self.httpd.shutdown()
        self.httpd.server_close()


FIXTURE = ROOT / "tests" / "fixtures" / "stream" / "causal-lstm-mha"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A real step model: the causal LSTM + MultiHeadAttention fixture exported with --streaming."""
    out = tmp_path_factory.mktemp("exported") / "step.onnx"
    done = run_cli("export", FIXTURE.with_suffix(".keras"), "-o", out, "--streaming")
    assert done.returncode == 0, done.stderr
    return out


def test_an_exported_step_model_streams_in_node_and_chromium_as_keras_stepped_it(exported, site, tmp_path):
    """The exporter's own file, stepped by the JS stream() in Node and in Chromium, against Keras's outputs on
    each prefix (saved in the fixture's .npz by scripts/make_stream_fixtures.py)."""
    ref = np.load(FIXTURE.with_suffix(".npz"))
    x, want = ref["x"][:, :60], ref["steps"][:, :60]
    report = node_example(tmp_path, exported, x, "--stream")
    node_error = np.abs(np.array(report["outputs"]["y"]) - want).max()
    chromium_error = np.abs(stacked(site.ops(steps_of(x), url="fixture.onnx"), "y") - want).max()
    print(f"exported causal-lstm-mha, 60 steps: node max abs {node_error:.3g}, chromium {chromium_error:.3g}")
    assert node_error < 1e-5 and chromium_error < 1e-5


@pytest.fixture(scope="module")
def site(browser, models, exported, tmp_path_factory):
    folder = web.build(models["step-golden"], tmp_path_factory.mktemp("site") / "site", ort_web=ORT_DIST).path
    for name in ("step", "stateful", "grow", "seed"):
        shutil.copy(models[name], folder / f"{name}.onnx")
    # A stream model without a reference set (what the exporter writes): the page `edgeattn web` writes for it.
    web.build(models["step"], folder / "plain", ort_web=ORT_DIST)
    shutil.copy(exported, folder / "fixture.onnx")
    served = Site(browser, folder)
    yield served
    served.close()


def steps_of(x):
    """One push per step: x[:, t] as (B, F)."""
    return [{"push": x[:, t].tolist()} for t in range(x.shape[1])]


def test_step_stream_in_chromium_equals_the_whole_sequence_twin(site, models):
    x = sequence(2, seed=1)
    prediction, last = full_twin(models, x)
    results = site.ops(steps_of(x))  # the page's own model: the step model (with a reference set)
    got_prediction, got_last = stacked(results, "prediction"), stacked(results, "last")
    assert got_prediction.shape == (2, STEPS, OUT) and got_last.shape == (
        2,
        STEPS,
        1,
    )  # (B, 1, OUT) -> (B, OUT) per step
    error = max(np.abs(got_prediction - prediction).max(), np.abs(got_last - last).max())
    print(f"chromium step LSTM, {STEPS} steps, batch 2: max abs {error:.3g}")
    assert error <= ATOL
    assert results[-1]["__states"] == {"lstm/h": [2, H], "lstm/c": [2, H]}
    # the same through the other file (fromBytes), and one sample without a batch axis: unbatched out
    one = site.ops([{"push": x[0, t].tolist()} for t in range(STEPS)], url="step.onnx")
    assert one[0]["prediction"]["dims"] == [OUT] and one[0]["last"]["dims"] == [1]
    assert np.abs(stacked(one, "prediction") - prediction[0]).max() <= ATOL
    # [B][1][F] is one step too; predict() on a stream model starts from the initial state
    first = site.ops([{"push": x[:, :1].tolist()}])[0]
    assert np.abs(array(first["prediction"]) - prediction[:, 0]).max() <= ATOL
    once = site.page.evaluate(
        "async (x) => (await window.edgeattn.model.predict(x)).outputs", x[:, :1].tolist()
    )
    assert np.abs(array(once["prediction"]) - prediction[:, :1]).max() <= ATOL
    assert once["lstm/h_next"]["dims"] == [2, H]


def test_reset_restarts_and_two_streams_are_independent_in_chromium(site, models):
    a, b = sequence(2, seed=2, steps=12), sequence(1, seed=3, steps=12)
    want_a, want_b = full_twin(models, a)[0], full_twin(models, b)[0]
    ops = [*steps_of(a), {"reset": True}, *steps_of(a)]
    results = site.ops(ops)
    first, second = stacked(results[:12], "prediction"), stacked(results[13:], "prediction")
    assert np.abs(first - want_a).max() <= ATOL and np.abs(second - want_a).max() <= ATOL
    # two streams (batch 2 and batch 1) of one model, pushes interleaved: one after the other, then all at once
    interleaved = [
        op for pair in zip(steps_of(a), steps_of(b)) for op in ({**pair[0], "id": 1}, {**pair[1], "id": 2})
    ]
    for parallel in (False, True):
        results = site.ops(interleaved, url="step.onnx", parallel=parallel)
        assert np.abs(stacked(results[0::2], "prediction") - want_a).max() <= ATOL
        assert np.abs(stacked(results[1::2], "prediction") - want_b).max() <= ATOL
    # another batch size needs a reset, and says so
    error = site.page.evaluate(
        """async ([a, b]) => { const s = window.edgeattn.model.stream(); await s.push(a);
             try { await s.push(b); return null; } catch (e) { return e.message; } }""",
        [a[:, 0].tolist(), b[:, 0].tolist()],
    )
    assert error == "this stream runs batch 2; got batch 1 (reset() first to start another)"


def test_stateful_chunks_in_chromium_equal_the_whole_sequence(site, models):
    x = sequence(2, seed=4)
    prediction, last = full_twin(models, x)
    results = site.ops(
        [{"push": x[:, t : t + 10].tolist()} for t in range(0, STEPS, 10)], url="stateful.onnx"
    )
    got = np.concatenate([array(r["prediction"]) for r in results], axis=1)
    assert got.shape == (2, STEPS, OUT)
    assert np.abs(got - prediction).max() <= ATOL
    assert np.abs(array(results[-1]["last"]) - last[:, -1]).max() <= ATOL


def test_a_growing_state_starts_empty_in_chromium(site):
    """A zero-length tensor (the empty cache, (3, 0, 2)) is fed on the first push; onnxruntime-web takes it."""
    x = sequence(3, seed=5, steps=20, features=2)
    results = site.ops(steps_of(x), url="grow.onnx")
    assert [r["__states"]["mem/key"] for r in results[:3]] == [[3, 1, 2], [3, 2, 2], [3, 3, 2]]
    assert results[-1]["__states"]["mem/key"] == [3, MAX_STEPS, 2]  # the graph keeps the last MAX_STEPS
    error = np.abs(stacked(results, "total") - growing_reference(x)).max()
    print(f"chromium growing cache, 20 steps: max abs {error:.3g}")
    assert error <= ATOL


def test_window_over_the_seed_model_in_chromium_equals_predict_on_the_last_steps(site):
    x = np.random.default_rng(6).random((2, 16, 1), dtype=np.float32)
    results = site.ops(steps_of(x), url="seed.onnx", window=10)
    assert results[:9] == [None] * 9
    got = stacked(results[9:], "y")
    error = np.abs(got - window_reference(x, 10)).max()
    print(f"chromium window(10) over seed.onnx: max abs {error:.3g}")
    assert got.shape == (2, 7, 1) and error <= ATOL
    one = site.ops([{"push": x[0, t].tolist()} for t in range(10)], url="seed.onnx", window=10)[-1]
    assert (
        one["y"]["dims"] == [1]
        and abs(one["y"]["data"][0] - window_reference(x[:1, :10], 10)[0, 0, 0]) <= ATOL
    )
    messages = site.page.evaluate(
        """async () => { const out = []; const { EdgeAttn } = window.edgeattn;
             const seed = window.__models["seed.onnx"];
             for (const f of [() => seed.stream(), () => seed.window(5), () => window.edgeattn.model.window(10)])
               try { f(); out.push(null); } catch (e) { out.push(e.message); }
             return out; }"""
    )
    assert messages == [
        "this model holds no edgeattn.stream metadata (it takes whole windows): use model.window(T)",
        "input 'x' takes 10 steps, not a window of 5",
        "this model streams itself (edgeattn.stream kind step): use model.stream()",
    ]


def test_the_page_of_a_stream_model_says_what_it_is(site, models):
    check = site.page.query_selector("#self-check")
    text = check.inner_text()
    assert check.get_attribute("data-status") == "pass", (
        text
    )  # its reference set: one step from the initial state
    assert text.startswith(
        "streaming model: step, 2 states (lstm/h, lstm/c); self-check (verify --golden, here): pass"
    )
    assert "state in" in site.page.inner_text("#spec") and "state out" in site.page.inner_text("#spec")
    site.page.click("#random")  # a random sequence of 8 steps, streamed
    site.page.wait_for_function("document.getElementById('result').dataset.outputs !== ''")
    shown = json.loads(site.page.get_attribute("#result", "data-outputs"))
    assert np.array(shown["prediction"]).shape == (8, OUT) and np.array(shown["last"]).shape == (8, 1)
    assert site.page.inner_text("#timing").startswith("8 steps, ")
    assert site.page.inner_text("#error") == ""
    # without a reference set: no self-check, said so; the form streams what it is given
    page = site.open("plain/")
    try:
        check = page.query_selector("#self-check")
        assert check.get_attribute("data-status") == "unchecked"
        assert (
            check.inner_text()
            == "streaming model: step, 2 states (lstm/h, lstm/c); no stored reference set, so no self-check"
        )
        x = sequence(1, seed=7, steps=5)
        page.fill("#input", json.dumps(x[0].tolist()))
        page.click("#run")
        page.wait_for_function("document.getElementById('result').dataset.outputs !== ''")
        shown = np.array(json.loads(page.get_attribute("#result", "data-outputs"))["prediction"])
        assert np.abs(shown - full_twin(models, x)[0][0]).max() <= ATOL
    finally:
        page.close()


# -- Node.js ---------------------------------------------------------------------------------------------------


def node_example(tmp_path, model, x, *flags):
    node = shutil.which("node")
    need(node is not None, "node is not installed")
    need((ROOT / "node_modules" / "onnxruntime-node").is_dir(), "onnxruntime-node is not installed (npm ci)")
    (tmp_path / "x.json").write_text(json.dumps(x.tolist()))
    result = subprocess.run([node, str(NODE_EXAMPLE), str(model), str(tmp_path / "x.json"), *flags],
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_node_stream_equals_the_whole_sequence_twin(models, tmp_path):
    x = sequence(2, seed=11)
    prediction, last = full_twin(models, x)
    report = node_example(tmp_path, models["step"], x, "--stream")
    got_prediction, got_last = np.array(report["outputs"]["prediction"]), np.array(report["outputs"]["last"])
    assert got_prediction.shape == (2, STEPS, OUT) and report["steps"] == report["pushes"] == STEPS
    error = max(np.abs(got_prediction - prediction).max(), np.abs(got_last - last).max())
    print(
        f"node step LSTM, {STEPS} steps, batch 2: max abs {error:.3g}, {report['ms_per_step']:.3f} ms per step"
    )
    assert error <= ATOL and report["ms_per_step"] > 0
    chunks = node_example(tmp_path, models["stateful"], x, "--stream", "--chunk", "10")
    assert chunks["pushes"] == 3
    assert np.abs(np.array(chunks["outputs"]["prediction"]).reshape(2, STEPS, OUT) - prediction).max() <= ATOL
    assert np.abs(np.array(chunks["outputs"]["last"])[:, -1] - last[:, -1]).max() <= ATOL


def test_node_growing_state_and_window(models, tmp_path):
    """onnxruntime-node takes the zero-length first cache; window(10) over the seed equals predict on the last 10."""
    x = sequence(3, seed=12, steps=20, features=2)
    report = node_example(tmp_path, models["grow"], x, "--stream")
    error = np.abs(np.array(report["outputs"]["total"]) - growing_reference(x)).max()
    print(f"node growing cache, 20 steps: max abs {error:.3g}")
    assert error <= ATOL
    x = np.random.default_rng(13).random((2, 16, 1), dtype=np.float32)
    report = node_example(tmp_path, models["seed"], x, "--window", "10")
    assert report["first_step"] == 9 and report["pushes"] == 16
    error = np.abs(np.array(report["outputs"]["y"]) - window_reference(x, 10)).max()
    print(f"node window(10) over seed.onnx: max abs {error:.3g}")
    assert error <= ATOL


def test_node_reset_and_two_streams(models, tmp_path):
    """The same stream() code in Node, used directly: reset() restarts, two streams keep their own states."""
    need(shutil.which("node") is not None, "node is not installed")
    need((ROOT / "node_modules" / "onnxruntime-node").is_dir(), "onnxruntime-node is not installed (npm ci)")
    a, b = sequence(2, seed=14, steps=10), sequence(2, seed=15, steps=10)
    script = """
import { readFileSync } from "node:fs";
import * as ort from "onnxruntime-node";
import { EdgeAttn } from "./edgeattn/deploy/web_assets/edgeattn.js";
const [path, a, b] = [process.argv[1], JSON.parse(process.argv[2]), JSON.parse(process.argv[3])];
const model = await EdgeAttn.fromBytes(readFileSync(path), { ort });
const s1 = model.stream(), s2 = model.stream();
const push = async (s, x, t) => (await s.push(x.map((row) => row[t]))).outputs.prediction.data;
const ra = [], rb = [];
for (let t = 0; t < a[0].length; t++) { ra.push(await push(s1, a, t)); rb.push(await push(s2, b, t)); }  // interleaved
s1.reset();
const again = [];
for (let t = 0; t < a[0].length; t++) again.push(await push(s1, a, t));
process.stdout.write(JSON.stringify({ ra, rb, again, steps: s1.steps }));
"""
    result = subprocess.run(
        ["node", "--input-type=module", "-e", script, str(models["step"]), json.dumps(a.tolist()), json.dumps(b.tolist())],
        capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    want_a, want_b = full_twin(models, a)[0], full_twin(models, b)[0]
    shape = (10, 2, OUT)
    assert np.abs(np.array(out["ra"]).reshape(shape).transpose(1, 0, 2) - want_a).max() <= ATOL
    assert np.abs(np.array(out["rb"]).reshape(shape).transpose(1, 0, 2) - want_b).max() <= ATOL
    assert np.abs(np.array(out["again"]).reshape(shape).transpose(1, 0, 2) - want_a).max() <= ATOL
    assert out["steps"] == 10


def test_node_stream_usage_errors(models, tmp_path):
    node = shutil.which("node")
    need(node is not None, "node is not installed")
    need((ROOT / "node_modules" / "onnxruntime-node").is_dir(), "onnxruntime-node is not installed (npm ci)")

    def run(model, text, *flags):
        return subprocess.run([node, str(NODE_EXAMPLE), str(model), "-", *flags], input=text,
                              capture_output=True, text=True)  # fmt: skip

    cases = [
        (models["seed"], "[[[1]]]", ["--stream"], "holds no edgeattn.stream metadata"),
        (models["step"], "[[[1, 2, 3]]]", ["--window", "5"], "streams itself"),
        (models["step"], "[[1, 2, 3]]", ["--stream"], "must be a sequence of rank 3"),
        (models["step"], "[[[1, 2]]]", ["--stream"], "input 'x' takes one step: (3) for one sample"),
    ]
    for model, text, flags, message in cases:
        result = run(model, text, *flags)
        assert result.returncode == 2 and message in result.stderr, (flags, result.stderr)
