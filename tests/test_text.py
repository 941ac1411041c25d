"""Text models (a Keras model that starts with TextVectorization): the pure-Python and JavaScript tokenizers against
Keras's own layer run by TensorFlow, the export of the numeric part, Predictor.predict_text against the reference
Keras computed when the fixtures were made (scripts/make_text_fixtures.py), verify on strings, the refusals, and
the same ids and outputs in Node.js and in headless Chromium."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import zipfile

import keras
import numpy as np
import onnx
import pytest
import tensorflow as tf
from conftest import ORT_DIST, ROOT, need, run_cli

from edgeattn.convert import textmodel
from edgeattn.convert.export import ExportOptions, export
from edgeattn.convert.loading import check_config
from edgeattn.convert.verify import verify_against_keras
from edgeattn.core.errors import UnsafeModelError, UnsupportedModelError
from edgeattn.deploy import web
from edgeattn.runtime import Predictor
from edgeattn.tokenizer import SPLIT, STANDARDIZE, Tokenizer

FIXTURES = ROOT / "tests" / "fixtures" / "text"
NODE = shutil.which("node")
ATOL = 1e-5

# What the layers are adapted on: ASCII and non-ASCII words in both cases, so that a tokenizer that lowercases
# Unicode, strips Unicode punctuation or splits on non-ASCII whitespace finds other tokens than Keras does.
CORPUS = [
    "the cat sat on the mat",
    "The Dog ran far, far away!",
    "école naïve café",
    "École CAFÉ Straße",
    "σίσυφος Σίσυφος 東京",
    "alpha\u00a0beta alpha beta gamma\u3000delta",
    "self-made state-of-the-art it's",
    "selfmade stateoftheart its",
    "x\x1cy x y \x85z",
    "“quoted” — dash … ¿qué?",
]
TRICKY = [
    "",
    " ",
    "\t\n",
    "The cat",
    "THE CAT SAT ON THE MAT, THE END.",
    "école ÉCOLE École",
    "Straße STRASSE straße",
    "Σίσυφος σίσυφος ΣΊΣΥΦΟΣ",
    "İstanbul istanbul",
    "alpha\u00a0beta gamma\u3000delta",
    "alpha\tbeta\ngamma\rdelta\x0bthe\x0ccat",
    "x\x1cy \x85z \u2028the\u2029cat",
    "self-made, state-of-the-art: it's!",
    "a,b-c.d/e[f]g\\h_i`j{k}l~m|n^o@p?q>r=s<t;u:v+w*x)y(z&1%2$3#4\"5!6'7",
    "“quoted” — dash … ¿qué? «guillemets» ‘single’",
    "unknownword zzqx the",
    "emoji 👍🏽 and e\u0301 combining",
    "  leading and trailing  ",
    "the " * 30,
    "東京 東京東京",
    "[UNK] [unk] unk",
]


def spec_and_tokens(layer, texts):
    """(the exported spec of ``layer``, Keras's own ids on ``texts`` as computed by TensorFlow)."""
    return textmodel.layer_spec(layer), np.asarray(layer(tf.constant(texts)[:, None])).tolist()


@pytest.fixture(scope="module")
def keras_layers():
    """Every standardize x split setting, with a fixed and a free length: (name, spec, Keras's ids on TRICKY)."""
    cases = []
    for standardize in STANDARDIZE:
        for split in SPLIT:
            for length in (None, 7):
                layer = keras.layers.TextVectorization(
                    standardize=standardize, split=split, output_sequence_length=length
                )
                layer.adapt(CORPUS)
                spec, tokens = spec_and_tokens(layer, TRICKY)
                cases.append((f"standardize={standardize} split={split} length={length}", spec, tokens))
    return cases


def test_the_python_tokenizer_gives_kerass_ids_for_every_setting(keras_layers):
    for name, spec, want in keras_layers:
        got = Tokenizer(spec)(TRICKY)
        wrong = [(text, g, w) for text, g, w in zip(TRICKY, got, want) if g != w]
        assert not wrong and len(got) == len(want), f"{name}: {wrong[:2]}"
        assert len({len(row) for row in got}) == 1  # a rectangle: padded to the length or the longest


def test_keras_rules_the_tokenizer_follows_were_measured_here():
    """The facts the tokenizers rest on, as TensorFlow 2.21 computes them (see edgeattn/tokenizer.py)."""
    lower = tf.strings.lower(["ÉCOLE École İ Σ ABC"]).numpy()[0].decode()
    assert lower == "École École İ Σ abc"  # ASCII only
    split = [t.decode() for t in tf.strings.split(["a\u00a0b\u3000c\x1cd\te\x0bf\x0cg\rh\ni j"]).to_list()[0]]
    assert split == ["a\u00a0b\u3000c\x1cd", "e", "f", "g", "h", "i", "j"]
    regex = r'[!"#$%&()\*\+,-\./:;<=>?@\[\\\]^_`{|}~\']'
    stripped = tf.strings.regex_replace(["".join(map(chr, range(33, 127))) + "–“¿…"], regex, "")
    assert (
        stripped.numpy()[0].decode() == "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz–“¿…"
    )


def test_the_javascript_tokenizer_gives_kerass_ids_for_every_setting(keras_layers, tmp_path):
    need(NODE is not None, "node is not installed")
    cases = [{"name": n, "spec": s, "want": w} for n, s, w in keras_layers]
    (tmp_path / "cases.json").write_text(json.dumps({"texts": TRICKY, "cases": cases}))
    script = (
        'import { Tokenizer } from "'
        + (ROOT / "edgeattn" / "deploy" / "web_assets" / "edgeattn.js").as_uri()
        + '";\n'
        'import { readFileSync } from "node:fs";\n'
        "const { texts, cases } = JSON.parse(readFileSync(process.argv[2], 'utf8'));\n"
        "const out = cases.map((c) => ({ name: c.name, got: new Tokenizer(c.spec).encode(texts) }));\n"
        "process.stdout.write(JSON.stringify(out));\n"
    )
    (tmp_path / "run.mjs").write_text(script)
    result = subprocess.run(
        [NODE, str(tmp_path / "run.mjs"), str(tmp_path / "cases.json")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    for case, out in zip(cases, json.loads(result.stdout)):
        wrong = [(t, g, w) for t, g, w in zip(TRICKY, out["got"], case["want"]) if g != w]
        assert not wrong and len(out["got"]) == len(TRICKY), f"{case['name']}: {wrong[:2]}"


# -- the fixtures, exported once --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """{fixture name: (onnx path, ExportResult, the .npz reference Keras computed)}"""
    folder = tmp_path_factory.mktemp("text")
    found = {}
    for name in ("text-classifier", "char-lstm"):
        shutil.copy(FIXTURES / f"{name}.keras", folder / f"{name}.keras")
        result = export(folder / f"{name}.keras", folder / f"{name}.onnx")
        found[name] = (folder / f"{name}.onnx", result, dict(np.load(FIXTURES / f"{name}.npz")))
    return found


def test_the_export_is_the_numeric_part_with_an_integer_token_input(exported):
    path, result, _ = exported["text-classifier"]
    model = onnx.load(path)
    assert {o.domain for o in model.opset_import} <= {"", "ai.onnx.ml"}
    assert {n.domain for n in model.graph.node} <= {""}
    assert [(i.name, i.type.tensor_type.elem_type) for i in model.graph.input] == [
        ("tokens", onnx.TensorProto.INT64)
    ]
    assert result.summary.inputs == (("tokens", ("batch", 16), "int64"),)
    assert result.summary.nodes <= 80
    spec = json.loads({p.key: p.value for p in model.metadata_props}[textmodel.TEXT_KEY])
    vectorize = keras.saving.load_model(FIXTURES / "text-classifier.keras").get_layer("vectorize")
    assert spec["vocabulary"] == vectorize.get_vocabulary()
    assert (spec["standardize"], spec["split"], spec["output_sequence_length"]) == (
        "lower_and_strip_punctuation",
        "whitespace",
        16,
    )
    assert (
        spec["mask_token"],
        spec["mask_index"],
        spec["oov_token"],
        spec["oov_index"],
        spec["num_oov_indices"],
    ) == (
        "",
        0,
        "[UNK]",
        1,
        1,
    )
    # the stored examples are Keras's own ids (the layer run by TensorFlow here), not the tokenizer's
    assert spec["examples"]
    texts = [e["text"] for e in spec["examples"]]
    keras_ids = np.asarray(vectorize(tf.constant(texts))).tolist()
    assert [e["ids"] for e in spec["examples"]] == keras_ids
    lstm = onnx.load(exported["char-lstm"][0])
    assert [d.dim_param for d in lstm.graph.input[0].type.tensor_type.shape.dim] == ["batch", "time"]
    assert [n.op_type for n in lstm.graph.node].count("LSTM") == 1


@pytest.mark.parametrize("name", ["text-classifier", "char-lstm"])
def test_predict_text_gives_kerass_reference(exported, name):
    path, _, reference = exported[name]
    texts = [str(t) for t in reference["texts"]]
    predictor = Predictor(path)
    y = predictor.predict_text(texts)
    assert predictor._tokenizer(texts) == reference["tokens"].tolist()  # Keras's tokens, made by TensorFlow
    error = float(np.abs(y - reference["outputs"]).max())
    print(f"{name}: predict_text max abs error against Keras {error:.2e} on {len(texts)} texts")
    assert y.shape == reference["outputs"].shape and error <= ATOL
    with pytest.raises(TypeError, match="list of strings"):
        predictor.predict_text("one string")


def test_predict_text_imports_neither_tensorflow_nor_keras(exported):
    path = exported["text-classifier"][0]
    code = (
        "import sys; from edgeattn.runtime import Predictor\n"
        f"y = Predictor({str(path)!r}).predict_text(['The rain!', ''])\n"
        "assert y.shape == (2, 3), y.shape\n"
        "heavy = [m for m in ('tensorflow', 'keras', 'tf2onnx') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_verify_on_strings_through_the_cli(exported):
    path = exported["text-classifier"][0]
    result = run_cli("verify", path, "--keras", path.with_suffix(".keras"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "texts in batches of" in result.stdout
    row = next(line for line in result.stdout.splitlines() if "vectorize tokens" in line)
    assert row.split()[2:5] == ["0", "0", "0"] and "ids equal" in row and row.endswith("pass")
    assert result.stdout.rstrip().endswith("verify: pass (atol 0.0001, rtol 1e-05)")


def test_verify_fails_on_a_tokenizer_spec_that_differs_from_keras(exported, tmp_path):
    path = exported["text-classifier"][0]
    model = onnx.load(path)
    entry = next(p for p in model.metadata_props if p.key == textmodel.TEXT_KEY)
    spec = json.loads(entry.value)
    spec["vocabulary"][2], spec["vocabulary"][3] = spec["vocabulary"][3], spec["vocabulary"][2]
    entry.value = json.dumps(spec)
    onnx.save(model, tmp_path / "swapped.onnx")
    report = verify_against_keras(tmp_path / "swapped.onnx", path.with_suffix(".keras"), layers=False)
    assert not report.passed
    assert report.first_divergent_layer.name == "vectorize tokens"
    assert report.failures()[0].startswith("layer 'vectorize tokens' is the first to diverge")


def test_predict_cli_takes_a_text_file_and_a_json_list(exported, tmp_path):
    path, _, reference = exported["text-classifier"]
    texts = [str(t) for t in reference["texts"] if "\n" not in t and "\r" not in t and "\x0b" not in t]
    (tmp_path / "texts.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    (tmp_path / "texts.json").write_text(json.dumps(texts))
    want = Predictor(path).predict_text(texts)
    for name in ("texts.txt", "texts.json"):
        result = run_cli("predict", path, tmp_path / name, "-o", tmp_path / f"{name}.out.json")
        assert result.returncode == 0, result.stderr
        y = np.array(json.loads((tmp_path / f"{name}.out.json").read_text())["y"])
        assert y.shape == want.shape and np.abs(y - want).max() <= 1e-6
    help_text = run_cli("predict", "--help").stdout
    assert ".txt (one text per line)" in help_text


def test_a_sequential_model_with_no_split_exports_and_verifies(tmp_path):
    L = keras.layers
    vectorize = L.TextVectorization(standardize="strip_punctuation", split=None, output_sequence_length=3)
    vectorize.adapt(["a b", "c", "Hello!", "x y z", "Hello"])
    model = keras.Sequential(
        [
            keras.Input((1,), dtype="string"),
            vectorize,
            L.Embedding(10, 4),
            L.GlobalAveragePooling1D(),
            L.Dense(2),
        ]
    )
    model.save(tmp_path / "seq.keras")
    result = export(tmp_path / "seq.keras", tmp_path / "seq.onnx")
    assert result.summary.inputs == (("tokens", ("batch", 3), "int64"),)
    texts = ["Hello!", "hello", "", "x y z", "a b.", "zzz"]
    want = np.asarray(model(tf.constant(texts)[:, None]))
    assert np.abs(Predictor(tmp_path / "seq.onnx").predict_text(texts) - want).max() <= ATOL
    report = verify_against_keras(tmp_path / "seq.onnx", tmp_path / "seq.keras")
    assert report.passed and report.layers[0].worst_case.endswith("ids equal"), report.failures()


def test_verify_on_strings_with_the_attention_weights_output(tmp_path):
    shutil.copy(FIXTURES / "text-classifier.keras", tmp_path / "model.keras")
    export(tmp_path / "model.keras", tmp_path / "model.onnx", ExportOptions(attention_weights=True))
    y, weights = Predictor(tmp_path / "model.onnx").predict_text(["The rain!", "tea"], return_attention=True)
    assert y.shape == (2, 3) and weights.shape == (2, 2, 16, 16)
    report = verify_against_keras(tmp_path / "model.onnx", tmp_path / "model.keras", layers=False)
    assert report.passed and [o.name for o in report.outputs] == ["y", "attention_weights"], report.failures()


# -- refusals -----------------------------------------------------------------------------------------------


def _config_with(**changes) -> dict:
    with zipfile.ZipFile(FIXTURES / "text-classifier.keras") as zf:
        config = json.loads(zf.read("config.json"))
    layer = next(c for c in config["config"]["layers"] if c["class_name"] == "TextVectorization")
    layer["config"].update(changes)
    return config


@pytest.mark.parametrize(
    "changes, why",
    [
        (
            {"standardize": {"module": "builtins", "class_name": "function", "config": "eval"}},
            "custom callable",
        ),
        (
            {"split": {"module": "keras.src.activations", "class_name": "function", "config": "relu"}},
            "custom callable",
        ),
        ({"output_mode": "multi_hot"}, "output_mode is 'multi_hot'"),
        ({"ngrams": 2}, "ngrams is 2"),
        ({"vocabulary": "/etc/passwd"}, "names the file '/etc/passwd'"),
        ({"extra": "../../vocab.txt"}, "could name a file"),
    ],
)
def test_unsupported_text_settings_are_refused_by_name(changes, why):
    assert check_config(_config_with()) is not None  # the fixture's own config passes
    with pytest.raises(UnsafeModelError) as info:
        check_config(_config_with(**changes))
    assert "TextVectorization layer 'vectorize'" in str(info.value) and why in str(info.value)


def test_a_refused_text_model_through_the_cli_is_one_error_line(tmp_path):
    bad = tmp_path / "bad.keras"
    with zipfile.ZipFile(FIXTURES / "text-classifier.keras") as src, zipfile.ZipFile(bad, "w") as dst:
        for item in src.namelist():
            data = src.read(item)
            if item == "config.json":
                data = json.dumps(_config_with(vocabulary="/etc/passwd")).encode()
            dst.writestr(item, data)
    result = run_cli("export", bad, "-o", tmp_path / "bad.onnx")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert (
        lines[0].startswith("error: refused to load: TextVectorization layer 'vectorize'")
        and "/etc/passwd" in lines[0]
    )
    assert len(lines) <= 2 and (len(lines) == 1 or lines[1].startswith("hint: "))
    assert "Traceback" not in result.stderr and not (tmp_path / "bad.onnx").exists()


def test_a_text_vectorization_not_at_the_start_is_refused_by_name():
    L = keras.layers
    vectorize = L.TextVectorization(output_sequence_length=4, name="inner_vectorize")
    vectorize.adapt(CORPUS)
    inner = keras.Sequential([keras.Input((1,), dtype="string"), vectorize, L.Embedding(40, 4)], name="inner")
    inp = keras.Input((1,), dtype="string")
    model = keras.Model(inp, L.Dense(1)(L.GlobalAveragePooling1D()(inner(inp))))
    with pytest.raises(
        UnsupportedModelError, match="TextVectorization layer 'inner_vectorize' is not at the start"
    ):
        textmodel.split_text(model)
    two = L.TextVectorization(output_sequence_length=4, name="vectorize_b")
    two.adapt(CORPUS)
    a, b = keras.Input((1,), dtype="string"), keras.Input((1,), dtype="string")
    joined = L.Concatenate()([L.Embedding(40, 4)(vectorize(a)), L.Embedding(40, 4)(two(b))])
    with pytest.raises(UnsupportedModelError, match="is not at the start"):
        textmodel.split_text(keras.Model([a, b], L.Dense(1)(L.GlobalAveragePooling1D()(joined))))


# -- Node.js and the browser -----------------------------------------------------------------------------


def test_the_node_example_gives_the_same_ids_and_outputs(exported, tmp_path):
    need(NODE is not None, "node is not installed")
    need((ROOT / "node_modules" / "onnxruntime-node").is_dir(), "onnxruntime-node is not installed (npm ci)")
    for name in ("text-classifier", "char-lstm"):
        path, _, reference = exported[name]
        (tmp_path / "texts.json").write_text(json.dumps([str(t) for t in reference["texts"]]))
        script = ROOT / "examples" / "node" / "predict.mjs"
        result = subprocess.run(
            [NODE, str(script), str(path), str(tmp_path / "texts.json")], capture_output=True, text=True
        )
        assert result.returncode == 0 and not result.stderr, result.stderr
        out = json.loads(result.stdout)
        assert out["ids"] == reference["tokens"].tolist()
        assert np.abs(np.array(out["outputs"]["y"]) - reference["outputs"]).max() <= ATOL


def test_the_web_page_tokenizes_and_predicts_as_keras(exported, browser, tmp_path):
    path, _, reference = exported["text-classifier"]
    site = web.build(path, tmp_path / "site", ort_web=ORT_DIST).path
    httpd = web.server(site, 0)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    page = browser.new_page()
    try:
        page.goto(f"http://127.0.0.1:{httpd.server_address[1]}/")
        page.wait_for_selector("body[data-ready=true]", timeout=60_000)
        check = page.query_selector("#self-check")
        assert check.get_attribute("data-status") == "pass", check.inner_text()
        assert "tokenizer: Keras's ids on 8 texts" in check.inner_text()
        texts = [str(t) for t in reference["texts"]]
        result = page.evaluate("async (t) => await window.edgeattn.model.predictText(t)", texts)
        assert result["ids"] == reference["tokens"].tolist()
        y = np.array(result["outputs"]["y"]["data"]).reshape(result["outputs"]["y"]["dims"])
        assert np.abs(y - reference["outputs"]).max() <= ATOL
        # the text box: one text per line, Predict
        assert "Texts, one per line" in page.inner_text("#input-help")
        page.fill("#input", "The rain and the wind, today!\nGOAL! the TEAM won")
        page.click("#run")
        page.wait_for_function("document.getElementById('result').dataset.outputs !== ''")
        ids = json.loads(page.get_attribute("#result", "data-ids"))
        assert ids == Tokenizer.from_json(Predictor(path).metadata[textmodel.TEXT_KEY])(
            ["The rain and the wind, today!", "GOAL! the TEAM won"]
        )
        shown = json.loads(page.get_attribute("#result", "data-outputs"))
        want = Predictor(path).predict_text(["The rain and the wind, today!", "GOAL! the TEAM won"])
        assert np.abs(np.array(shown["y"]) - want).max() <= ATOL
    finally:
        page.close()
        httpd.shutdown()
        httpd.server_close()


def test_the_web_page_fails_its_self_check_when_its_tokenizer_differs_from_keras(exported, browser, tmp_path):
    site = web.build(exported["text-classifier"][0], tmp_path / "site", ort_web=ORT_DIST).path
    meta = json.loads((site / "model.json").read_text())
    first = next(e for e in meta["text"]["examples"] if e["ids"] and e["ids"][0])
    first["ids"][0] += 1  # Keras's ids as stored, one changed: the page's tokenizer no longer matches them
    (site / "model.json").write_text(json.dumps(meta))
    httpd = web.server(site, 0)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    page = browser.new_page()
    try:
        page.goto(f"http://127.0.0.1:{httpd.server_address[1]}/")
        page.wait_for_selector("body[data-ready=true]", timeout=60_000)
        check = page.query_selector("#self-check")
        assert check.get_attribute("data-status") == "fail"
        assert "tokenizer: differs from Keras on" in check.inner_text()
    finally:
        page.close()
        httpd.shutdown()
        httpd.server_close()
