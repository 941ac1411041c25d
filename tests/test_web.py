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

from edgeattn import web
from edgeattn.export import ExportOptions, export
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
    assert sorted(p.name for p in out.iterdir()) == ["edgeattn.js", "index.html", "model.json", "model.onnx"]
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
