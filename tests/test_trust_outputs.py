"""Issue 25, items 8 and 9: the CLI keeps every output of a multi-output model (predict writes them all, explain
shows them all), and what was checked is what runs for ONNX files: the bytes read once are what the contained
child parses and what onnxruntime builds, even when the file changes on disk in between. TensorFlow-free."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import MODELS, run_cli
from onnx import TensorProto, helper, numpy_helper

from edgeattn import runtime
from edgeattn.core import sandbox

SEED = MODELS / "seed.onnx"


def two_outputs(path, first="score", second="embedding"):
    """x (batch, 3) -> first = x @ W (batch, 2), second = relu(x) + 1 (batch, 3)."""
    w = numpy_helper.from_array(np.arange(6, dtype=np.float32).reshape(3, 2) / 5, "w")
    one = numpy_helper.from_array(np.ones((1,), np.float32), "one")
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], [first]),
            helper.make_node("Relu", ["x"], ["r"]),
            helper.make_node("Add", ["r", "one"], [second]),
        ],
        "two",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])],
        [
            helper.make_tensor_value_info(first, TensorProto.FLOAT, ["batch", 2]),
            helper.make_tensor_value_info(second, TensorProto.FLOAT, ["batch", 3]),
        ],
        [w, one],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def onnxruntime_outputs(path, x) -> dict:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, {"x": x})))


@pytest.fixture
def two(tmp_path):
    x = np.random.default_rng(3).normal(size=(4, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    model = two_outputs(tmp_path / "two.onnx")
    return model, tmp_path / "x.npy", onnxruntime_outputs(model, x)


# -- item 8: every output ------------------------------------------------------------------------------------


def test_predict_writes_every_output_to_npz_json_and_npy(two, tmp_path):
    model, x, want = two
    result = run_cli("predict", model, x, "-o", tmp_path / "all.npz")
    assert result.returncode == 0, result.stderr
    with np.load(tmp_path / "all.npz") as got:
        assert sorted(got.files) == ["embedding", "score"]
        for name in want:
            np.testing.assert_array_equal(got[name], want[name])
    assert "score (4, 2)" in result.stdout and "embedding (4, 3)" in result.stdout  # says what it wrote

    result = run_cli("predict", model, x, "-o", tmp_path / "all.json")
    assert result.returncode == 0, result.stderr
    got = json.loads((tmp_path / "all.json").read_text())
    assert list(got) == ["score", "embedding"]  # by name, in the model's order
    for name in want:
        np.testing.assert_allclose(np.array(got[name], np.float32), want[name], rtol=1e-6)

    result = run_cli("predict", model, x, "-o", tmp_path / "y.npy")
    assert result.returncode == 0, result.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), want["score"])
    np.testing.assert_array_equal(np.load(tmp_path / "y.embedding.npy"), want["embedding"])
    assert f"{tmp_path / 'y.npy'}: score" in result.stdout
    assert f"{tmp_path / 'y.embedding.npy'}: embedding" in result.stdout


def test_output_name_picks_one_and_an_unknown_name_is_refused(two, tmp_path):
    model, x, want = two
    result = run_cli("predict", model, x, "-o", tmp_path / "e.csv", "--output-name", "embedding")
    assert result.returncode == 0, result.stderr
    got = np.loadtxt(tmp_path / "e.csv", delimiter=",", ndmin=2)
    np.testing.assert_allclose(got, want["embedding"], rtol=1e-6)
    assert "not written: score" in result.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.csv", "two.onnx", "x.npy"]

    bad = run_cli("predict", model, x, "-o", tmp_path / "n.npy", "--output-name", "nope")
    assert bad.returncode == 2
    assert bad.stderr.startswith("error: ") and "'score', 'embedding'" in bad.stderr
    assert not (tmp_path / "n.npy").exists()


def test_an_output_name_never_becomes_a_path(tmp_path):
    model = two_outputs(tmp_path / "odd.onnx", second="../escaped")
    np.save(tmp_path / "x.npy", np.ones((1, 3), np.float32))
    (tmp_path / "out").mkdir()
    result = run_cli("predict", model, tmp_path / "x.npy", "-o", tmp_path / "out" / "y.npy")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["y.npy", "y.output1.npy"]
    assert "y.output1.npy: ../escaped" in result.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["odd.onnx", "out", "x.npy"]


def attention_and_more(path):
    """x (batch, 5, 1) -> y (prediction), attention_weights = softmax over time, extra = the max over time."""
    axes = numpy_helper.from_array(np.array([2], np.int64), "axes")
    time_axis = numpy_helper.from_array(np.array([1], np.int64), "time_axis")
    graph = helper.make_graph(
        [
            helper.make_node("Squeeze", ["x", "axes"], ["s"]),
            helper.make_node("Softmax", ["s"], ["attention_weights"], axis=1),
            helper.make_node("Mul", ["s", "attention_weights"], ["m"]),
            helper.make_node("ReduceSum", ["m", "time_axis"], ["y"], keepdims=1),
            helper.make_node("ReduceMax", ["s"], ["extra"], axes=[1], keepdims=1),
        ],
        "att",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 5, 1])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1]),
            helper.make_tensor_value_info("attention_weights", TensorProto.FLOAT, ["batch", 5]),
            helper.make_tensor_value_info("extra", TensorProto.FLOAT, ["batch", 1]),
        ],
        [axes, time_axis],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    return path


def test_explain_shows_every_output_and_says_what_it_shows(tmp_path):
    model = attention_and_more(tmp_path / "att.onnx")
    x = np.array([[[0.1], [0.7], [0.2], [0.3], [0.05]], [[0.9], [0.1], [0.2], [0.3], [0.4]]], np.float32)
    np.save(tmp_path / "x.npy", x)
    result = run_cli("explain", model, tmp_path / "x.npy")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("attention_weights (5,) per sample") and "y (1,), extra (1,)" in lines[0]
    want = onnxruntime_outputs(model, x)
    for i, peak in enumerate((1, 0)):
        line = next(line for line in lines if line.startswith(f"sample {i} "))
        assert f"y {want['y'][i, 0]:.4g}" in line and f"extra {want['extra'][i, 0]:.4g}" in line
        assert f"attention peaks at t={peak}" in line


# -- item 9: what was checked is what runs -------------------------------------------------------------------


def moved(path, delta=0.5):
    """The seed model with its largest weight tensor moved: same inputs, other outputs."""
    model = onnx.load(SEED)
    largest = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    array = numpy_helper.to_array(largest).copy()
    array += delta
    largest.CopyFrom(numpy_helper.from_array(array, largest.name))
    onnx.save(model, path)
    return path


@pytest.fixture
def swap(tmp_path):
    """(user_file, x, want, other): the user's copy of the seed model, an input, what the seed computes on it
    and what the moved model (the swap) computes."""
    user_file = tmp_path / "model.onnx"
    user_file.write_bytes(SEED.read_bytes())
    other = moved(tmp_path / "other.onnx")
    x = np.random.default_rng(9).random((3, 10, 1), dtype=np.float32)
    want, theirs = onnxruntime_outputs(SEED, x)["y"], onnxruntime_outputs(other, x)["y"]
    assert np.abs(want - theirs).max() > 1e-2  # the swap would show
    return user_file, x, want, other


def test_the_predictor_builds_the_bytes_it_checked(swap, monkeypatch):
    user_file, x, want, other = swap
    checked = runtime.check_external_data

    def check_then_swap(*args, **kwargs):
        found = checked(*args, **kwargs)
        user_file.write_bytes(other.read_bytes())  # the file changes between the check and the build
        return found

    monkeypatch.setattr(runtime, "check_external_data", check_then_swap)
    np.testing.assert_array_equal(runtime.Predictor(user_file).predict(x), want)


def test_predict_and_inspect_use_the_bytes_the_sandbox_child_parsed(swap, monkeypatch):
    from edgeattn import cli
    from edgeattn.graphs.onnxfile import describe

    user_file, x, want, other = swap
    original = user_file.read_bytes()
    parsed = []
    contained = sandbox.parse

    def parse_then_swap(kind, path, shown=None):
        parsed.append((os.fspath(path), Path(path).read_bytes()))  # what the child reads
        reply = contained(kind, path, shown)
        user_file.write_bytes(other.read_bytes())  # the file changes between the check and the use
        return reply

    monkeypatch.setattr(sandbox, "parse", parse_then_swap)
    monkeypatch.setenv("EDGEATTN_CONTAIN", "1")
    predictor = cli._predictor(user_file)
    np.testing.assert_array_equal(predictor.predict(x), want)
    assert predictor.path == str(user_file)  # messages name the user's file
    assert parsed[-1][0] != str(user_file) and parsed[-1][1] == original  # the child parsed a private copy

    user_file.write_bytes(original)
    renamed = onnx.load(other)
    renamed.graph.output[0].name = "swapped"
    onnx.save(renamed, other)
    info = describe(user_file)
    assert [o["name"] for o in info["outputs"]] == ["y", "attention_weights"]
    assert info["size_bytes"] == len(original) and parsed[-1][1] == original


def test_external_data_is_read_from_a_private_copy_of_what_was_checked(tmp_path, monkeypatch):
    model = onnx.load(SEED)
    folder = tmp_path / "m"
    folder.mkdir()
    monkeypatch.chdir(folder)  # onnx resolves location against the working folder in some versions
    onnx.save(model, "seed.onnx", save_as_external_data=True, location="seed.data", size_threshold=256)
    monkeypatch.chdir(tmp_path)
    elsewhere = folder / "other.data"  # inside the folder: onnxruntime itself would follow a link to it
    elsewhere.write_bytes((folder / "seed.data").read_bytes()[::-1])  # other weights, same size
    x = np.random.default_rng(2).random((2, 10, 1), dtype=np.float32)
    want = onnxruntime_outputs(SEED, x)["y"]
    private_tmp = tmp_path / "tmp"
    private_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private_tmp))

    np.testing.assert_array_equal(runtime.Predictor(folder / "seed.onnx").predict(x), want)
    assert list(private_tmp.iterdir()) == []  # the private copy is gone once the session is built

    checked = runtime.check_external_data

    def check_then_link(*args, **kwargs):
        found = checked(*args, **kwargs)
        (folder / "seed.data").unlink()
        (folder / "seed.data").symlink_to(elsewhere)  # after the check, the data file becomes a link
        return found

    monkeypatch.setattr(runtime, "check_external_data", check_then_link)
    with pytest.raises(ValueError, match="external data cannot be read safely"):
        runtime.Predictor(folder / "seed.onnx")
    assert list(private_tmp.iterdir()) == []
