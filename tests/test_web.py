"""The model on the device beyond Python: the `edgeattn web` site in a real headless Chromium (Debian's, driven by
Playwright; no browser is downloaded), and examples/node/predict.mjs under the system `node` with
onnxruntime-node. Both are compared with the Python Predictor.

.ci/run installs what these need (apt chromium, `npm ci` for the committed package-lock.json). Elsewhere they
are skipped with the reason, unless CI is set, where a missing piece is a failure.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
import threading

import keras
import numpy as np
from conftest import MODELS, ORT_DIST, ROOT, need, run_cli

from edgeattn.convert.export import ExportOptions, export
from edgeattn.deploy import web
from edgeattn.runtime import Predictor

ATOL = 1e-5


class Served:
    """A site served on 127.0.0.1 and opened in a new page; ``status`` is what #self-check says."""

    def __init__(self, browser, folder):
        self.httpd = web.server(folder, 0)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.page = browser.new_page()
        self.page.goto(f"http://127.0.0.1:{self.httpd.server_address[1]}/")
        self.page.wait_for_selector("body[data-ready=true]", timeout=60_000)
        check = self.page.query_selector("#self-check")
        self.status = check.get_attribute("data-status")
        self.max_abs = float(check.get_attribute("data-max-abs"))
        self.text = check.inner_text()

    def predict(self, x) -> dict[str, np.ndarray]:
        """Outputs of the page's JavaScript API (EdgeAttn.predict) for x (an array or a dict of arrays)."""
        value = {k: v.tolist() for k, v in x.items()} if isinstance(x, dict) else x.tolist()
        result = self.page.evaluate("async (x) => (await window.edgeattn.model.predict(x)).outputs", value)
        return {k: np.array(v["data"], np.float64).reshape(v["dims"]) for k, v in result.items()}

    def close(self):
        self.page.close()
        self.httpd.shutdown()
        self.httpd.server_close()


def site_for(model, tmp_path, name="site"):
    return web.build(model, tmp_path / name, ort_web=ORT_DIST).path


def assert_same_as_predictor(served: Served, model, samples):
    predictor = Predictor(model)
    names = [o.name for o in predictor.outputs]
    for x in samples:
        want = dict(zip(names, predictor.run(x)))
        got = served.predict(x)
        assert set(got) == set(want)
        for name in names:
            assert got[name].shape == want[name].shape
            assert np.abs(got[name] - want[name]).max() <= ATOL, name


def test_seed_site_checks_itself_and_matches_the_python_predictor(browser, tmp_path):
    served = Served(browser, site_for(MODELS / "seed.onnx", tmp_path))
    try:
        assert served.status == "pass", served.text
        assert 0 <= served.max_abs <= 1e-5
        rng = np.random.default_rng(4)
        samples = [rng.random((1 + i % 3, 10, 1), dtype=np.float32) for i in range(20)]
        assert_same_as_predictor(served, MODELS / "seed.onnx", samples)
        # the form: a random sample, then Predict
        served.page.click("#random")
        served.page.wait_for_function("document.getElementById('result').dataset.outputs !== ''")
        shown = json.loads(served.page.get_attribute("#result", "data-outputs"))
        assert set(shown) == {"y", "attention_weights"} and len(shown["attention_weights"][0]) == 10
        assert served.page.inner_text("#timing").endswith(" ms")
        assert served.page.is_visible("#heatmap")
    finally:
        served.close()


def test_a_corrupted_model_shows_fail_with_a_readable_message(browser, tmp_path):
    folder = site_for(MODELS / "seed.onnx", tmp_path)
    data = (folder / "model.onnx").read_bytes()
    (folder / "model.onnx").write_bytes(data[: len(data) // 3])
    served = Served(browser, folder)
    try:
        assert served.status == "fail"
        assert "cannot load model.onnx" in served.text
    finally:
        served.close()


def test_a_moved_weight_fails_the_browser_self_check(browser, tmp_path):
    import onnx
    from onnx import numpy_helper

    model = onnx.load(MODELS / "seed.onnx")
    largest = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    array = numpy_helper.to_array(largest).copy()
    array.flat[3] += 0.5
    largest.CopyFrom(numpy_helper.from_array(array, largest.name))
    onnx.save(model, tmp_path / "moved.onnx")
    served = Served(browser, site_for(tmp_path / "moved.onnx", tmp_path))
    try:
        assert served.status == "fail" and served.max_abs > 1e-4, served.text
    finally:
        served.close()


def test_bidirectional_gru_on_a_free_time_axis_in_the_browser(browser, tmp_path):
    L = keras.layers
    inp = L.Input((None, 3))
    h = L.Bidirectional(L.GRU(8, return_sequences=True))(inp)
    model = keras.Model(inp, L.Dense(2)(L.GlobalAveragePooling1D()(L.AdditiveAttention()([h, h]))))
    model.save(tmp_path / "bigru.keras")
    export(tmp_path / "bigru.keras", tmp_path / "bigru.onnx", ExportOptions(attention_weights=True))
    served = Served(browser, site_for(tmp_path / "bigru.onnx", tmp_path))
    try:
        assert served.status == "pass", served.text
        rng = np.random.default_rng(8)
        samples = [rng.normal(0, 1, (2, length, 3)).astype(np.float32) for length in (1, 7, 23)]
        assert_same_as_predictor(served, tmp_path / "bigru.onnx", samples)
    finally:
        served.close()


def test_two_integer_inputs_in_the_browser(browser, tmp_path):
    export(ROOT / "tests" / "fixtures" / "keras2" / "k2-transformer.h5", tmp_path / "tokens.onnx")
    served = Served(browser, site_for(tmp_path / "tokens.onnx", tmp_path))
    try:
        assert served.status == "pass", served.text
        rng = np.random.default_rng(1)
        x = {
            "tokens": rng.integers(1, 40, (3, 12)).astype(np.int32),
            "positions": np.tile(np.arange(12, dtype=np.int32), (3, 1)),
        }
        assert_same_as_predictor(served, tmp_path / "tokens.onnx", [x])
    finally:
        served.close()


def test_the_cdn_script_integrity_is_that_of_the_pinned_npm_package():
    need(ORT_DIST.is_dir(), "onnxruntime-web is not installed (npm ci)")
    package = json.loads((ORT_DIST.parent / "package.json").read_text())
    assert package["version"] == web.ORT_WEB_VERSION
    digest = hashlib.sha384((ORT_DIST / web.ORT_SCRIPT).read_bytes()).digest()
    assert "sha384-" + base64.b64encode(digest).decode() == web.ORT_SCRIPT_SRI


def test_web_cli_writes_the_folder_once_and_keeps_it_without_force(tmp_path):
    out = tmp_path / "site"
    first = run_cli("web", MODELS / "seed.onnx", "-o", out)
    assert first.returncode == 0, first.stderr
    page = (out / "index.html").read_text()
    assert f'integrity="{web.ORT_SCRIPT_SRI}"' in page and web.CDN in page  # no --ort-web: the pinned CDN
    assert sorted(p.name for p in out.iterdir()) == [
        "edgeattn.js",
        "index.html",
        "model.json",
        "model.onnx",
        "page.js",
    ]
    again = run_cli("web", MODELS / "seed.onnx", "-o", out)
    assert again.returncode == 2 and again.stderr.startswith(f"error: {out} exists")
    assert [p.name for p in tmp_path.iterdir()] == ["site"]  # no temporary folder left


def test_node_example_matches_the_python_predictor(tmp_path):
    node = shutil.which("node")
    need(node is not None, "node is not installed")
    need((ROOT / "node_modules" / "onnxruntime-node").is_dir(), "onnxruntime-node is not installed (npm ci)")
    x = np.random.default_rng(6).random((4, 10, 1), dtype=np.float32)
    (tmp_path / "x.json").write_text(json.dumps(x.tolist()))
    script = ROOT / "examples" / "node" / "predict.mjs"
    result = subprocess.run([node, str(script), str(MODELS / "seed.onnx"), str(tmp_path / "x.json")],
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0, result.stderr
    outputs = json.loads(result.stdout)["outputs"]
    y, weights = Predictor(MODELS / "seed.onnx").predict(x, return_attention=True)
    assert np.abs(np.array(outputs["y"]) - y).max() <= ATOL
    assert np.abs(np.array(outputs["attention_weights"]) - weights).max() <= ATOL
    bad = subprocess.run([node, str(script), str(MODELS / "seed.onnx"), "-"], input="[[1, 2]]",
                         capture_output=True, text=True)  # fmt: skip
    assert bad.returncode == 2 and bad.stderr.startswith("error: input 'x' must have shape")


# -- issue 25, item 2: a model's strings are text, and the page runs only its own scripts ---------------------

HOSTILE_INPUT = '<img src=x onerror="window.__pwned=1;document.body.dataset.pwned=1">'
HOSTILE_OUTPUT = '<svg onload="window.__pwned=2"></svg><b>bold</b>'
HOSTILE_META = '<script>window.__pwned=3</script><img src=y onerror="window.__pwned=4">'


def hostile_model(path):
    """A one-node ONNX whose input and output names and a metadata value are HTML that runs script if a page
    ever parses them as HTML, with a reference set (so the page can check itself)."""
    import onnx
    from onnx import TensorProto, helper

    from edgeattn.runtime import GOLDEN_KEY, encode_array

    graph = helper.make_graph(
        [helper.make_node("Relu", [HOSTILE_INPUT], [HOSTILE_OUTPUT])],
        "hostile",
        [helper.make_tensor_value_info(HOSTILE_INPUT, TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info(HOSTILE_OUTPUT, TensorProto.FLOAT, ["batch", 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    x = np.random.default_rng(0).normal(size=(2, 4)).astype(np.float32)
    golden = {
        "inputs": {HOSTILE_INPUT: encode_array(x)},
        "outputs": {HOSTILE_OUTPUT: encode_array(np.maximum(x, 0))},
        "atol": 1e-5,
    }
    for key, value in {GOLDEN_KEY: json.dumps(golden), "edgeattn.source": HOSTILE_META}.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, path)
    return path


def test_hostile_names_are_shown_as_text_and_run_nothing(browser, tmp_path):
    folder = site_for(hostile_model(tmp_path / "hostile.onnx"), tmp_path)
    served = Served.__new__(Served)  # opened by hand: listen for CSP reports before the page's scripts run
    served.httpd = web.server(folder, 0)
    threading.Thread(target=served.httpd.serve_forever, daemon=True).start()
    served.page = browser.new_page()
    served.page.add_init_script(
        "document.addEventListener('securitypolicyviolation', (e) => "
        "(window.__violations = window.__violations || []).push(e.violatedDirective))"
    )
    try:
        served.page.goto(f"http://127.0.0.1:{served.httpd.server_address[1]}/")
        served.page.wait_for_selector("body[data-ready=true]", timeout=60_000)
        check = served.page.query_selector("#self-check")
        assert check.get_attribute("data-status") == "pass", check.inner_text()  # it still checks itself
        spec = served.page.inner_text("#spec")
        assert HOSTILE_INPUT in spec and HOSTILE_OUTPUT in spec  # the names, shown as they are
        assert served.page.query_selector_all("#spec img, #spec svg, #spec b, body script:not([src])") == []
        x = np.random.default_rng(1).normal(size=(3, 4)).astype(np.float32)
        got = served.predict({HOSTILE_INPUT: x})
        np.testing.assert_allclose(got[HOSTILE_OUTPUT], np.maximum(x, 0), atol=ATOL)
        # The Content-Security-Policy: in the page and as a header; an injected inline script does not run.
        policy = served.page.get_attribute('meta[http-equiv="Content-Security-Policy"]', "content")
        assert "script-src 'self' 'wasm-unsafe-eval'" in policy and "unsafe-inline" not in policy
        ran = served.page.evaluate(
            """() => { const s = document.createElement("script"); s.textContent = "window.__inline = 1";
                       document.body.append(s); return window.__inline ?? null; }"""
        )
        assert ran is None
        served.page.wait_for_function("(window.__violations || []).includes('script-src-elem')")
        assert served.page.evaluate("window.__pwned ?? null") is None
        assert served.page.query_selector("[data-pwned]") is None
        violations = served.page.evaluate("window.__violations")
        assert set(violations) <= {"script-src-elem", "img-src"}, violations
    finally:
        served.close()


def test_the_served_site_sends_its_policy_as_a_header(tmp_path):
    import urllib.request

    folder = site_for(MODELS / "seed.onnx", tmp_path)
    page = (folder / "index.html").read_text()
    assert "<script>" not in page and 'type="module" src="page.js"' in page  # no inline script at all
    httpd = web.server(folder, 0)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{httpd.server_address[1]}/") as response:
            header = response.headers["Content-Security-Policy"]
            assert response.headers["X-Content-Type-Options"] == "nosniff"
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert header.startswith(web.csp(page, cdn=False)) and "frame-ancestors 'none'" in header
    cdn = web.csp(page, cdn=True)
    assert f"script-src 'self' {web.CDN} 'wasm-unsafe-eval'" in cdn and f"connect-src 'self' {web.CDN}" in cdn


def test_a_hostile_text_model_shows_its_vocabulary_and_examples_as_text(browser, tmp_path):
    """A text model: its input name, vocabulary and example texts are HTML payloads; the page tokenizes them,
    shows them as text and runs none."""
    import onnx
    from onnx import TensorProto, helper

    from edgeattn.runtime import GOLDEN_KEY, TEXT_KEY, encode_array

    token = "<img/src=x/onerror=window.__pwned=5>"
    graph = helper.make_graph(
        [helper.make_node("Cast", [HOSTILE_INPUT], ["y"], to=TensorProto.FLOAT)],
        "hostile-text",
        [helper.make_tensor_value_info(HOSTILE_INPUT, TensorProto.INT64, ["batch", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    ids = np.array([[2, 3, 0]], np.int64)
    spec = {
        "version": 1, "input": "tokens", "standardize": None, "split": "whitespace",
        "output_sequence_length": 3, "mask_token": "", "mask_index": 0, "oov_token": "[UNK]", "oov_index": 1,
        "num_oov_indices": 1, "pad_index": 0, "vocabulary": ["", "[UNK]", token, HOSTILE_OUTPUT.replace(" ", "")],
        "examples": [{"text": f"{token} {HOSTILE_OUTPUT.replace(' ', '')}", "ids": ids[0].tolist()}],
    }  # fmt: skip
    golden = {
        "inputs": {HOSTILE_INPUT: encode_array(ids)},
        "outputs": {"y": encode_array(ids.astype(np.float32))},
    }
    for key, value in {GOLDEN_KEY: json.dumps(golden), TEXT_KEY: json.dumps(spec)}.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, tmp_path / "text.onnx")
    served = Served(browser, site_for(tmp_path / "text.onnx", tmp_path))
    try:
        assert served.status == "pass", served.text  # the page's tokenizer gives the stored ids
        assert served.page.input_value("#input") == spec["examples"][0]["text"]
        served.page.click("#random")  # the example texts, tokenized and run
        served.page.wait_for_function("document.getElementById('result').dataset.outputs !== ''")
        assert json.loads(served.page.get_attribute("#result", "data-ids")) == ids.tolist()
        assert HOSTILE_INPUT in served.page.inner_text("#spec")
        assert served.page.query_selector_all("img, svg, b") == []
        assert served.page.evaluate("window.__pwned ?? null") is None
    finally:
        served.close()
