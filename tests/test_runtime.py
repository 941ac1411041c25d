"""The predictor: numpy + onnxruntime only, strict about input, equal to onnxruntime."""

from __future__ import annotations

import subprocess
import sys
import threading

import numpy as np
import onnxruntime as ort
import pytest

from edgeattn.runtime import Predictor


def test_importing_the_runtime_pulls_in_no_tensorflow():
    code = (
        "import sys, edgeattn, edgeattn.runtime\n"
        "heavy = [m for m in ('tensorflow', 'keras', 'tf_keras', 'tf2onnx') if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""


def test_predicts_with_tensorflow_unimportable(seed_onnx):
    code = (
        "import sys\n"
        "for m in ('tensorflow', 'keras', 'tf_keras', 'tf2onnx'): sys.modules[m] = None\n"
        "import numpy as np\n"
        "from edgeattn.runtime import Predictor\n"
        "p = Predictor(sys.argv[1])\n"
        "y, w = p.predict(np.zeros((2, 10, 1), np.float32), return_attention=True)\n"
        "print(y.shape, w.shape, p.self_check()['passed'])"
    )
    result = subprocess.run([sys.executable, "-c", code, str(seed_onnx)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "(2, 1) (2, 10) True"


def test_predict_equals_onnxruntime(seed_onnx):
    x = np.random.default_rng(0).random((9, 10, 1), dtype=np.float32)
    want = ort.InferenceSession(str(seed_onnx), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    p = Predictor(seed_onnx, providers=["cpu"])
    np.testing.assert_array_equal(p.predict(x), want[0])
    _, w = p(x, return_attention=True)
    np.testing.assert_array_equal(w, want[1])
    assert np.all(w >= 0) and np.allclose(w.sum(axis=1), 1.0, atol=1e-5)


def test_accepts_lists_and_other_float_dtypes(seed_onnx):
    p = Predictor(seed_onnx)
    x = np.random.default_rng(1).random((2, 10, 1))
    np.testing.assert_allclose(p.predict(x.tolist()), p.predict(x.astype(np.float32)), atol=0)


@pytest.mark.parametrize(
    ("bad", "error", "message"),
    [
        (
            np.zeros((2, 10), np.float32),
            ValueError,
            r"must have shape \(batch, 10, 1\) \(rank 3\), got shape \(2, 10\)",
        ),
        (np.zeros((2, 10, 3), np.float32), ValueError, r"axis 2 is 3, expected 1"),
        (np.array([["a"] * 10]), TypeError, "must be numbers"),
        ("hello", TypeError, "got a string"),
        (np.full((1, 10, 1), np.nan, np.float32), ValueError, "NaN or infinite"),
    ],
)
def test_bad_inputs_get_clear_errors(seed_onnx, bad, error, message):
    with pytest.raises(error, match=message):
        Predictor(seed_onnx).predict(bad)


def test_nonfinite_allowed_on_request(seed_onnx):
    y = Predictor(seed_onnx, allow_nonfinite=True).predict(np.full((1, 10, 1), np.inf, np.float32))
    assert y.shape == (1, 1)


def test_chunks_equal_one_batch(seed_onnx):
    x = np.random.default_rng(2).random((1000, 10, 1), dtype=np.float32)
    whole = Predictor(seed_onnx).predict(x)
    chunked = Predictor(seed_onnx, batch_size=64).predict(x)
    np.testing.assert_allclose(chunked, whole, atol=1e-6)


def test_threads_get_their_own_answers(seed_onnx):
    p = Predictor(seed_onnx, threads=1)
    inputs = [np.random.default_rng(i).random((3, 10, 1), dtype=np.float32) for i in range(8)]
    expected = [p.predict(x) for x in inputs]
    errors = []

    def work(i):
        for _ in range(50):
            if not np.array_equal(p.predict(inputs[i]), expected[i]):
                errors.append(i)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_introspection(seed_onnx):
    p = Predictor(seed_onnx)
    assert [(s.name, s.shape) for s in p.inputs] == [("x", ("batch", 10, 1))]
    assert [s.name for s in p.outputs] == ["y", "attention_weights"]
    assert p.metadata["edgeattn.source"] == "seed.keras"
    assert "CPUExecutionProvider" in p.providers
    assert "x: (batch, 10, 1) float32" in repr(p)


def test_missing_attention_output_is_explained(seed_onnx_plain):
    with pytest.raises(ValueError, match="export it with `edgeattn export --attention-weights`"):
        Predictor(seed_onnx_plain).predict(np.zeros((1, 10, 1), np.float32), return_attention=True)


def test_unavailable_provider_is_skipped(seed_onnx, caplog):
    import logging

    with caplog.at_level(logging.WARNING, logger="edgeattn.runtime"):
        p = Predictor(seed_onnx, providers=["tensorrt", "cpu"])
    assert p.providers == ("CPUExecutionProvider",)
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "'tensorrt' not available" in warning and "CPUExecutionProvider" in warning


def test_not_a_model(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_text("not a model")
    with pytest.raises(ValueError, match="not a model onnxruntime can load"):
        Predictor(bad)
    with pytest.raises(FileNotFoundError):
        Predictor(tmp_path / "missing.onnx")


# -- fuse_for_runtime: onnxruntime's own fused kernels, in memory only ----------------------------------------

CONTRIB = "com.microsoft"


@pytest.fixture(scope="module")
def transformer_onnx(tmp_path_factory):
    from conftest import ROOT

    from edgeattn.convert.export import export

    out = tmp_path_factory.mktemp("fuse") / "k2-transformer.onnx"
    export(ROOT / "tests" / "fixtures" / "keras2" / "k2-transformer.h5", out)
    return out


def _kernel_ops(predictor: Predictor, x) -> set[str]:
    """The op types of the kernels the Predictor's own session ran (onnxruntime's profile of it)."""
    import json

    predictor.predict(x)
    with open(predictor.end_profiling()) as fh:
        return {e["args"]["op_name"] for e in json.load(fh) if e.get("cat") == "Node"}


def _optimized_ops(data: bytes, fuse: bool, tmp_path) -> set[tuple[str, str]]:
    """(domain, op type) of the graph onnxruntime builds from ``data``, as open_session builds its sessions."""
    import onnx

    from edgeattn import runtime
    from edgeattn.graphs import onnxfile

    out = tmp_path / f"optimized-{fuse}.onnx"
    original = runtime.session_options

    def saving(*args, **kwargs):
        options = original(*args, **kwargs)
        options.optimized_model_filepath = str(out)
        return options

    runtime.session_options = saving  # onnxfile imports it when called
    try:
        onnxfile.open_session(data, ["cpu"], threads=1, fuse_for_runtime=fuse)
    finally:
        runtime.session_options = original
    return {(n.domain, n.op_type) for n in onnx.load(out).graph.node}


def test_fused_and_stored_graphs_agree_and_only_the_fused_holds_contrib_kernels(transformer_onnx, tmp_path):
    stored = transformer_onnx.read_bytes()
    rng = np.random.default_rng(0)
    feeds = [
        {"tokens": rng.integers(0, 40, (b, 12), dtype=np.int32), "positions": np.tile(np.arange(12, dtype=np.int32), (b, 1))}
        for b in (1, 7, 64)
    ]  # fmt: skip
    fused, plain = (
        Predictor(transformer_onnx, threads=1),
        Predictor(transformer_onnx, threads=1, fuse_for_runtime=False),
    )
    assert fused.fuse_for_runtime and not plain.fuse_for_runtime
    for feed in feeds:
        a, b = fused.predict(feed), plain.predict(feed)
        assert a.shape == b.shape and np.abs(a - b).max() <= 1e-5
    # The Predictors' own sessions, by the kernels they ran: onnxruntime's fused ones (one Attention per
    # self-attention, edgeattn.graphs.ortfusion; Gelu once its GELUs are written for its fusion) where fused; standard
    # ops in the stored graph.
    profile = tmp_path / "profile"
    on = _kernel_ops(Predictor(transformer_onnx, threads=1, profile_prefix=profile), feeds[1])
    off = _kernel_ops(
        Predictor(transformer_onnx, threads=1, fuse_for_runtime=False, profile_prefix=profile), feeds[1]
    )
    assert {"Gelu", "Attention"} <= on and "Softmax" not in on, on
    assert not on & {"BiasGelu", "SkipLayerNormalization"}, on  # measured slower: off (SLOWER_FUSIONS)
    assert not off & {
        "Attention",
        "FusedMatMul",
        "FusedGemm",
        "Gelu",
        "BiasGelu",
        "SkipLayerNormalization",
    }, off
    assert {"Erf", "MatMul", "LayerNormalization"} <= off
    # The sessions verify, score and bench open: the same, read from onnxruntime's optimized graph.
    assert any(domain.startswith(CONTRIB) for domain, _ in _optimized_ops(stored, True, tmp_path))
    assert not any(domain.startswith(CONTRIB) for domain, _ in _optimized_ops(stored, False, tmp_path))
    assert transformer_onnx.read_bytes() == stored  # the file stays standard


def _keras_gelu_model(one_shape=(1, 1, 1), bias: bool = False):
    """x -> Keras's exact GELU, as tf2onnx writes it: 0.5 * x * (1 + erf(x * 0.7071...)); the 1 of rank 3.
    With ``bias``, a Dense's bias is added first (what onnxruntime's BiasGelu fuses)."""
    from onnx import TensorProto, helper, numpy_helper

    consts = [
        numpy_helper.from_array(np.array(0.5, np.float32), "half"),
        numpy_helper.from_array(np.array(0.70710677, np.float32), "rsqrt2"),
        numpy_helper.from_array(np.ones(one_shape, np.float32), "one"),
        numpy_helper.from_array(np.linspace(-1, 1, 8, dtype=np.float32), "bias"),
    ]
    nodes = [helper.make_node("Add", ["input", "bias"], ["x"])] if bias else []
    nodes += [
        helper.make_node("Mul", ["half", "x"], ["half_x"]),
        helper.make_node("Mul", ["x", "rsqrt2"], ["scaled"]),
        helper.make_node("Erf", ["scaled"], ["erf"]),
        helper.make_node("Add", ["one", "erf"], ["one_plus"]),
        helper.make_node("Mul", ["half_x", "one_plus"], ["y"]),
    ]
    x = helper.make_tensor_value_info("input" if bias else "x", TensorProto.FLOAT, ["batch", 5, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    graph = helper.make_graph(nodes, "gelu", [x], [y], consts)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


@pytest.mark.parametrize("one_shape", [(), (1, 1, 1)])
def test_keras_gelu_is_written_for_onnxruntimes_gelu_kernel(one_shape, tmp_path):
    import onnx

    from edgeattn.runtime import for_runtime

    data = _keras_gelu_model(one_shape)
    rewritten = onnx.ModelProto.FromString(for_runtime(data))
    assert [n.op_type for n in rewritten.graph.node] == ["Mul", "Div", "Erf", "Add", "Mul"]
    path = tmp_path / "gelu.onnx"
    path.write_bytes(data)
    x = np.random.default_rng(1).normal(size=(3, 5, 8)).astype(np.float32)
    on = _kernel_ops(Predictor(path, threads=1, profile_prefix=tmp_path / "p"), x)
    assert on == {"Gelu"}, on  # the five ops are one kernel
    want = Predictor(path, threads=1, fuse_for_runtime=False).predict(x)
    assert np.abs(Predictor(path, threads=1).predict(x) - want).max() <= 1e-6


def _residual_norm_model():
    """x + y (both (batch, 5, 8)) -> LayerNormalization: what onnxruntime fuses into SkipLayerNormalization."""
    from onnx import TensorProto, helper, numpy_helper

    consts = [
        numpy_helper.from_array(np.full(8, v, np.float32), n) for n, v in (("scale", 1.5), ("beta", 0.1))
    ]
    nodes = [
        helper.make_node("Add", ["x", "y"], ["sum"]),
        helper.make_node("LayerNormalization", ["sum", "scale", "beta"], ["out"], axis=-1, epsilon=1e-5),
    ]
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", 5, 8]) for n in ("x", "y")]
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 5, 8])
    graph = helper.make_graph(nodes, "residual", inputs, [out], consts)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


@pytest.mark.parametrize(
    ("model", "kept_apart", "fused"),
    [("bias-gelu", {"Add", "Gelu"}, {"BiasGelu"}), ("residual", {"Add", "LayerNormalization"}, {"SkipLayerNormalization"})],
)  # fmt: skip
def test_the_fusions_measured_slower_stay_off(model, kept_apart, fused, tmp_path, monkeypatch):
    """BiasGelu (a bias Add and the Gelu in one kernel) and SkipLayerNormalization (a residual Add and the
    LayerNormalization) measured slower than their parts at batch 256: the Predictor keeps them apart;
    onnxruntime alone would fuse them."""
    from edgeattn import runtime

    path = tmp_path / f"{model}.onnx"
    path.write_bytes(_keras_gelu_model((), bias=True) if model == "bias-gelu" else _residual_norm_model())
    rng = np.random.default_rng(4)
    x = rng.normal(size=(3, 5, 8)).astype(np.float32)
    x = x if model == "bias-gelu" else {"x": x, "y": rng.normal(size=(3, 5, 8)).astype(np.float32)}
    assert _kernel_ops(Predictor(path, threads=1, profile_prefix=tmp_path / "a"), x) == kept_apart
    monkeypatch.setattr(runtime, "SLOWER_FUSIONS", [])
    assert _kernel_ops(Predictor(path, threads=1, profile_prefix=tmp_path / "b"), x) == fused


def test_a_one_that_would_raise_the_rank_stays(tmp_path):
    """x of rank 3 and a 1 of rank 4: the Add broadcasts to rank 4, which a scalar 1 would not."""
    import onnx

    from edgeattn.runtime import for_runtime

    rewritten = onnx.ModelProto.FromString(for_runtime(_keras_gelu_model((1, 1, 1, 1))))
    add = next(n for n in rewritten.graph.node if n.op_type == "Add")
    assert "one" in add.input  # the rank-4 one, as stored
    path = tmp_path / "gelu.onnx"
    path.write_bytes(_keras_gelu_model((1, 1, 1, 1)))
    x = np.random.default_rng(2).normal(size=(3, 5, 8)).astype(np.float32)
    got, want = (Predictor(path, fuse_for_runtime=f).predict(x) for f in (True, False))
    assert got.shape == want.shape == (1, 3, 5, 8) and np.abs(got - want).max() <= 1e-6


def test_a_model_without_gelu_loads_without_importing_onnx():
    code = (
        "import sys\nimport numpy as np\nfrom edgeattn.runtime import Predictor\n"
        "Predictor(sys.argv[1]).predict(np.zeros((1, 10, 1), np.float32))\nprint('onnx' in sys.modules)"
    )
    from conftest import MODELS

    result = subprocess.run(
        [sys.executable, "-c", code, str(MODELS / "seed.onnx")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_without_onnx_the_bytes_stay_as_they_are(monkeypatch):
    import builtins

    from edgeattn.runtime import for_runtime

    data = _keras_gelu_model()
    real = builtins.__import__

    def no_onnx(name, *args, **kwargs):
        if name == "onnx" or name.startswith("onnx."):
            raise ImportError("no onnx here")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_onnx)
    assert for_runtime(data) is data


def test_the_stored_graph_still_folds_quantized_weights(tmp_path):
    """fuse_for_runtime=False keeps onnxruntime's basic rewrites, constant folding among them: an int8 file's
    DequantizeLinear is folded at load (fold_weights) unless that is off too."""
    from conftest import MODELS

    from edgeattn.deploy.quantize import quantize

    int8 = tmp_path / "seed.int8.onnx"
    quantize(MODELS / "seed.onnx", int8, "int8")
    x = np.random.default_rng(3).random((2, 10, 1), dtype=np.float32)
    folded = _kernel_ops(Predictor(int8, fuse_for_runtime=False, profile_prefix=tmp_path / "a"), x)
    kept = _kernel_ops(
        Predictor(int8, fuse_for_runtime=False, fold_weights=False, profile_prefix=tmp_path / "b"), x
    )
    assert "DequantizeLinear" not in folded and "LSTM" in folded
    assert "DequantizeLinear" in kept
