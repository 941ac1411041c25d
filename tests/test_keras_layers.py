"""The layer kinds users bring: Keras' own attention layers, transformer parts, CuDNN layers, TF-op layers and
the user's own layer classes, from Keras 2 ``.h5`` (saved by TF 2.15) and from Keras 3 ``.keras`` / ``.h5``.

References are independent of edgeattn: TF 2.15's stored outputs for the Keras 2 files
(scripts/make_keras2_layer_fixtures.py), NumPy's cuDNN equations for the CuDNN files (cudnn_reference.py),
and the Keras model itself, run here, for the Keras 3 files. ONNX runs in onnxruntime, called here.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import cudnn_reference
import keras
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import ROOT, run_cli

from edgeattn.convert.export import ExportOptions, export
from edgeattn.convert.loading import check_config, load_model
from edgeattn.core.errors import UnsafeModelError, UnsupportedModelError
from edgeattn.graphs import graph

KERAS2 = ROOT / "tests" / "fixtures" / "keras2"
USER_LAYERS = KERAS2 / "user_layers.py"
# What the fixtures reach is ~1e-7 (the worst, k2-tfop, 7e-7); float32 rounding over a few layers.
ATOL = 2e-6

# fixture -> (fused recurrent nodes by op type, needs the user's layer code)
KERAS2_FIXTURES = {
    "k2-attention": ({"LSTM": 1}, False),
    "k2-additive-attention": ({"GRU": 1}, False),
    "k2-mha-bilstm": ({"LSTM": 1}, False),
    "k2-transformer": ({}, False),
    "k2-tfop": ({"LSTM": 1}, False),
    "k2-user-attention": ({"LSTM": 1}, True),
    "k2-user-transformer": ({}, True),
    "k2-cudnn-lstm": ({"LSTM": 1}, False),
    "k2-cudnn-gru": ({"GRU": 2}, False),
}
CUDNN_MODELS = {
    "k2-cudnn-lstm": cudnn_reference.cudnn_lstm_model,
    "k2-cudnn-gru": cudnn_reference.cudnn_gru_model,
}


def run_onnx(path: Path, inputs: list[np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return session.run(None, {i.name: x for i, x in zip(session.get_inputs(), inputs)})


def stored_arrays(data, prefix: str) -> list[np.ndarray]:
    """``x`` or ``x0, x1, ...`` from a fixture's .npz (not ``xlong``)."""
    if prefix in data:
        return [data[prefix]]
    return [
        data[f"{prefix}{i}"]
        for i in range(len([k for k in data if k[len(prefix) :].isdigit() and k.startswith(prefix)]))
    ]


def assert_edge_ready(path: Path, fused: dict[str, int]) -> onnx.ModelProto:
    model = onnx.load(path)
    ops = [n.op_type for n in model.graph.node]
    assert {op: ops.count(op) for op in graph.RECURRENT_OPS if op in ops} == fused
    assert not set(ops) & graph.LOOP_OPS
    assert {n.domain for n in model.graph.node} <= {"", "ai.onnx"}
    assert {o.domain for o in model.opset_import} <= {"", "ai.onnx", "ai.onnx.ml"}
    return model


@pytest.fixture(scope="module")
def keras2_exports(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("keras2")
    out = {}
    for name, (_, user) in KERAS2_FIXTURES.items():
        out[name] = folder / f"{name}.onnx"
        export(
            KERAS2 / f"{name}.h5", out[name], ExportOptions(custom_layers=(str(USER_LAYERS),) if user else ())
        )
    return out


@pytest.mark.parametrize("name", sorted(KERAS2_FIXTURES))
def test_keras2_file_exports_standard_fused_and_matches_the_independent_reference(name, keras2_exports):
    fused, _ = KERAS2_FIXTURES[name]
    path = keras2_exports[name]
    assert_edge_ready(path, fused)
    data = np.load(KERAS2 / f"{name}.npz")
    probes = [("x", "y")] + ([("xlong", "ylong")] if "xlong" in data.files else [])
    for x_key, y_key in probes:
        xs = stored_arrays(data, x_key)
        got = run_onnx(path, xs)
        if name in CUDNN_MODELS:
            want = [CUDNN_MODELS[name](KERAS2 / f"{name}.h5", xs[0].astype(np.float64))]
        else:
            want = stored_arrays(data, y_key)
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert g.shape == w.shape
            assert np.abs(g - w).max() <= ATOL, f"{name} {x_key}: {np.abs(g - w).max()}"


@pytest.mark.parametrize("name", ["k2-transformer", "k2-mha-bilstm"])
def test_attention_reshapes_have_constant_targets(name, keras2_exports):
    """tf2onnx computes each reshape's target on every call; the export makes them constants (edgeattn.graphs.shapes)."""
    model = onnx.load(keras2_exports[name])
    constants = {t.name for t in model.graph.initializer}
    reshapes = [n for n in model.graph.node if n.op_type == "Reshape"]
    assert reshapes and all(n.input[1] in constants for n in reshapes)
    assert sum(n.op_type in {"Shape", "ReduceProd"} for n in model.graph.node) <= 1


@pytest.mark.parametrize("name", ["k2-transformer", "k2-user-transformer"])
def test_layer_norms_and_token_lookups_are_single_standard_ops(name, keras2_exports):
    """LayerNormalization as one node (opset 17), and the embeddings read the token inputs directly."""
    model = onnx.load(keras2_exports[name])
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("LayerNormalization") == 2
    assert not {"GlobalAveragePool", "Sqrt", "Reciprocal"} & set(ops)
    inputs = {i.name for i in model.graph.input}
    constants = {t.name for t in model.graph.initializer}
    lookups = [n for n in model.graph.node if n.op_type == "Gather" and n.input[0] in constants]
    assert lookups and all(n.input[1] in inputs for n in lookups)


def test_bench_times_a_transformer_of_two_token_inputs_against_tensorflow_and_litert(
    keras2_exports, tmp_path
):
    """No recurrent node: no floor row; ratios to tf.function and LiteRT; token ids reach every contender."""
    out = tmp_path / "bench.json"
    done = run_cli(
        "bench", keras2_exports["k2-transformer"], "--keras", KERAS2 / "k2-transformer.h5", "--litert",
        "--batch", "1,3", "--seconds", "0.1", "--json", out,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    names = {r["name"] for r in report["rows"]}
    assert names == {"edgeattn Predictor", "Keras under tf.function", "LiteRT (XNNPACK)"}, report["skipped"]
    for row in report["rows"]:
        assert set(row["x"]) == {"Predictor", "tf.function", "LiteRT"}
        assert row["max_abs_vs_predictor"] < 1e-5
    assert "x floor" not in done.stdout


def test_transformer_gelu_is_exported_with_erf(keras2_exports):
    ops = {n.op_type for n in onnx.load(keras2_exports["k2-transformer"]).graph.node}
    assert "Erf" in ops
    assert "Erfc" not in ops


def test_cudnn_layers_load_as_the_keras_layers_that_compute_the_same():
    model = load_model(KERAS2 / "k2-cudnn-gru.h5").model
    gru = model.get_layer("cudnn_gru")
    assert type(gru) is keras.layers.GRU
    assert gru.cell.reset_after and gru.go_backwards
    assert gru.cell.recurrent_activation.__name__ == "sigmoid"
    assert type(model.get_layer("bi_cudnn_gru").forward_layer) is keras.layers.GRU


# -- Keras 3 files -----------------------------------------------------------------------------------------


def _keras3_attention_model():
    """Keras' attention layers with every option the issue lists, on a free time axis."""
    L = keras.layers
    inp = L.Input((None, 3), name="x")
    h = L.GRU(8, return_sequences=True, name="gru")(inp)
    q = L.Dense(8, name="q")(h)
    k = L.Dense(8, name="k")(h)
    parts = [
        L.Attention(name="dot")([q, h]),
        L.Attention(use_scale=True, dropout=0.2, name="scaled")([q, h, k]),
        L.Attention(score_mode="concat", name="concat")([q, h]),
        L.AdditiveAttention(use_scale=False, name="additive")([q, h, k]),
        L.MultiHeadAttention(num_heads=2, key_dim=4, value_dim=3, output_shape=8, name="self_mha")(h, h),
        L.MultiHeadAttention(3, 2, use_bias=False, name="cross_mha")(q, h, k, use_causal_mask=True),
    ]
    x = L.Concatenate()(parts)
    x = L.LayerNormalization()(L.Add()([L.Dense(48)(h), x]))
    x = L.Conv1D(8, 3, padding="same", activation="gelu")(x)
    x = L.Concatenate()([L.GlobalAveragePooling1D()(x), L.GlobalMaxPooling1D()(x)])
    x = L.Activation("gelu")(L.Dense(8, activation="gelu")(x))
    model = keras.Model(inp, L.Dense(2)(x))
    rng = np.random.default_rng(5)
    model.set_weights([rng.uniform(-0.4, 0.4, w.shape).astype("float32") for w in model.get_weights()])
    return model


@pytest.fixture(scope="module")
def keras3_attention_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("keras3")
    model = _keras3_attention_model()
    model.save(folder / "attention.keras")
    model.save(folder / "attention.h5")
    return model, folder


@pytest.mark.parametrize("suffix", ["keras", "h5"])
def test_keras3_attention_layers_export_with_parity_on_a_free_time_axis(
    suffix, keras3_attention_files, tmp_path
):
    model, folder = keras3_attention_files
    out = tmp_path / "model.onnx"
    export(folder / f"attention.{suffix}", out, ExportOptions(attention_weights="cross_mha"))
    proto = assert_edge_ready(out, {"GRU": 1})
    assert "Erfc" not in {n.op_type for n in proto.graph.node}
    rng = np.random.default_rng(9)
    for length in (1, 6, 23):
        x = rng.normal(0, 1.5, (4, length, 3)).astype("float32")
        y, weights = run_onnx(out, [x])
        assert np.abs(y - keras.ops.convert_to_numpy(model(x))).max() <= ATOL
        assert weights.shape == (4, 3, length, length)  # (batch, heads, T_q, T_v)
        _, scores = model.get_layer("cross_mha")(
            *(keras.Model(model.input, model.get_layer(n).output)(x) for n in ("q", "gru", "k")),
            use_causal_mask=True,
            return_attention_scores=True,
        )
        assert np.abs(weights - keras.ops.convert_to_numpy(scores)).max() <= ATOL


def test_attention_weights_needs_a_name_when_there_are_several(keras3_attention_files, tmp_path):
    _, folder = keras3_attention_files
    result = run_cli("export", folder / "attention.keras", "-o", tmp_path / "m.onnx", "--attention-weights")
    assert result.returncode == 2
    first = result.stderr.splitlines()[0]
    assert first.startswith("error: the model has 6 attention layers")
    for name in ("'dot'", "'concat'", "'additive'", "'self_mha'", "'cross_mha'"):
        assert name in first
    assert not (tmp_path / "m.onnx").exists()


def test_attention_weights_of_keras_attention_reach_predictor_and_explain(keras3_attention_files, tmp_path):
    from edgeattn.runtime import Predictor

    _, folder = keras3_attention_files
    out = tmp_path / "additive.onnx"
    result = run_cli("export", folder / "attention.keras", "-o", out, "--attention-weights=additive")
    assert result.returncode == 0, result.stderr
    meta = {p.key: p.value for p in onnx.load(out).metadata_props}
    assert meta["edgeattn.attention_layer"] == "additive"
    x = np.random.default_rng(2).uniform(-1, 1, (3, 7, 3)).astype("float32")
    _, weights = Predictor(out).predict(x, return_attention=True)
    assert weights.shape == (3, 7, 7)
    np.testing.assert_allclose(weights.sum(axis=-1), 1.0, atol=1e-5)
    np.save(tmp_path / "x.npy", x)
    shown = run_cli("explain", out, tmp_path / "x.npy", "--samples", "1")
    assert shown.returncode == 0, shown.stderr
    assert "query 0" in shown.stdout and "peak at key" in shown.stdout
    assert run_cli("verify", out, "--keras", folder / "attention.keras").returncode == 0


# -- TF-op layers ------------------------------------------------------------------------------------------


def _with_tf_op(function: str) -> dict:
    return {"class_name": "Functional", "config": {"name": "m", "layers": [
        {"class_name": "InputLayer", "config": {"name": "in", "batch_input_shape": [None, 3]}, "name": "in",
         "inbound_nodes": []},
        {"class_name": "TFOpLambda", "config": {"name": "tf.op", "function": function}, "name": "tf.op",
         "inbound_nodes": [["in", 0, 0, {}]]}]}}  # fmt: skip


def test_tf_op_outside_the_allowlist_is_refused_by_name():
    with pytest.raises(UnsafeModelError, match=r"calls tf\.io\.write_file, which is not in edgeattn's list"):
        check_config(_with_tf_op("io.write_file"))
    check_config(_with_tf_op("nn.softmax"))  # an allowed one passes


# -- the user's own layers ---------------------------------------------------------------------------------


def test_custom_classes_are_refused_together_with_a_hint_naming_them(tmp_path):
    result = run_cli("export", KERAS2 / "k2-user-attention.h5", "-o", tmp_path / "m.onnx")
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert lines[0] == "error: refused to load 3 layers of the file (nothing from it was run):"
    assert "SimpleAttention layer 'simple'" in lines[1]
    assert "Custom>BahdanauAttention layer 'bahdanau'" in lines[2]
    assert "AttentionSum layer 'attention_sum'" in lines[3]
    assert lines[4].startswith(
        "hint: pass --custom-layers FILE.py holding class 'AttentionSum', 'BahdanauAttention', 'SimpleAttention'"
    )
    assert len(lines) == 5 and "Traceback" not in result.stderr
    assert not (tmp_path / "m.onnx").exists()


def test_custom_layers_by_module_name_and_the_cli_verify(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(KERAS2))
    out = tmp_path / "m.onnx"
    result = run_cli(
        "export",
        KERAS2 / "k2-user-transformer.h5",
        "-o",
        out,
        "--custom-layers",
        USER_LAYERS,
        "--atol",
        "1e-5",
    )
    assert result.returncode == 0, result.stderr
    report = tmp_path / "report.json"
    verified = run_cli(
        "verify", out, "--keras", KERAS2 / "k2-user-transformer.h5", "--custom-layers", USER_LAYERS,
        "--json", report,
    )  # fmt: skip
    assert verified.returncode == 0, verified.stderr
    assert json.loads(report.read_text())["passed"]
    assert load_model(KERAS2 / "k2-user-attention.h5", custom_layers=["user_layers"]).model.get_layer(
        "simple"
    )


def test_a_lambda_stays_refused_with_custom_layers():
    with pytest.raises(UnsafeModelError, match="Lambda layer"):
        load_model(ROOT / "tests" / "fixtures" / "legacy" / "lambda.h5", custom_layers=[str(USER_LAYERS)])


def test_a_custom_layer_that_does_not_convert_is_refused_naming_layer_and_op(tmp_path):
    code = tmp_path / "erfc_layer.py"
    code.write_text(
        textwrap.dedent(
            """
            import keras
            import tensorflow as tf

            @keras.saving.register_keras_serializable(package="mine")
            class Erfc(keras.layers.Layer):
                def call(self, x):
                    return tf.math.erfc(x)
            """
        )
    )
    from edgeattn.convert.custom_layers import import_layers

    cls = import_layers([str(code)])["mine>Erfc"]
    model = keras.Sequential([keras.Input((4, 2)), keras.layers.LSTM(3), cls(name="tail")])
    model.save(tmp_path / "erfc.keras")
    with pytest.raises(UnsupportedModelError, match=r"layer 'tail': TensorFlow op Erfc") as caught:
        export(tmp_path / "erfc.keras", tmp_path / "erfc.onnx", ExportOptions(custom_layers=(str(code),)))
    assert "no ONNX form" in caught.value.message
    assert not (tmp_path / "erfc.onnx").exists()


def test_keras2_style_call_with_a_required_training_argument_gets_a_default():
    from edgeattn.convert.custom_layers import import_layers

    layers = import_layers([str(USER_LAYERS)])
    x = np.ones((2, 5, 4), "float32")
    assert layers["AttentionSum"]()(x).shape == (2, 4)  # Keras 3 leaves training out; no TypeError


def test_custom_layers_that_do_not_exist_are_a_clear_error(tmp_path):
    result = run_cli("export", KERAS2 / "k2-user-attention.h5", "-o", tmp_path / "m.onnx",
                     "--custom-layers", tmp_path / "missing.py")  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.splitlines()[0] == f"error: --custom-layers {tmp_path / 'missing.py'}: no such file"


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_is_accepted_before_and_after_the_command(where, tmp_path):
    args = ["export", tmp_path / "missing.h5", "-o", tmp_path / "m.onnx"]
    args = ["--debug", *args] if where == "before" else [*args, "--debug"]
    result = run_cli(*args)
    assert result.returncode != 0
    assert "No such option" not in result.stderr
    assert "Traceback" in result.stderr and "InputError" in result.stderr


def test_a_gru_from_before_reset_after_keeps_what_it_computed():
    from edgeattn.convert.legacy import rewrite

    old = {"class_name": "GRU", "config": {"name": "gru_1", "units": 4, "implementation": 1}}
    assert rewrite(old).config["config"] == {"name": "gru_1", "units": 4, "reset_after": False}
    new = {"class_name": "GRU", "config": {"name": "g", "units": 4, "reset_after": True}}
    assert rewrite(new).config["config"]["reset_after"] is True


def test_an_authors_class_named_like_a_keras_class_gets_a_hint_and_loads_with_its_code(tmp_path):
    """A Kaggle-style ``Attention(step_dim)`` recorded under the bare name ``Attention``, as Keras 2 did."""
    import h5py

    code = tmp_path / "kaggle_layers.py"
    code.write_text(
        textwrap.dedent(
            """
            import keras
            from keras import ops

            class Attention(keras.layers.Layer):
                def __init__(self, step_dim, **kwargs):
                    super().__init__(**kwargs)
                    self.step_dim = step_dim

                def build(self, shape):
                    self.W = self.add_weight(shape=(shape[-1],), name="W")

                def call(self, x):
                    a = ops.softmax(ops.tensordot(x, self.W, 1), axis=-1)
                    return ops.sum(x * ops.expand_dims(a, -1), axis=1)

                def get_config(self):
                    return {**super().get_config(), "step_dim": self.step_dim}
            """
        )
    )
    from edgeattn.convert.custom_layers import import_layers

    attention = import_layers([str(code)])["Attention"]
    inp = keras.Input((6, 2))
    model = keras.Model(
        inp, keras.layers.Dense(1)(attention(6)(keras.layers.LSTM(4, return_sequences=True)(inp)))
    )
    path = tmp_path / "kaggle.h5"
    model.save(path)
    with h5py.File(path, "r+") as f:
        config = json.loads(f.attrs["model_config"])
        for layer in config["config"]["layers"]:
            if layer["class_name"].endswith("Attention"):
                layer["class_name"] = "Attention"
                layer.pop("module", None)
                layer.pop("registered_name", None)
        f.attrs["model_config"] = json.dumps(config)

    refused = run_cli("export", path, "-o", tmp_path / "m.onnx")
    assert refused.returncode == 2
    assert refused.stderr.splitlines()[-1].startswith(
        "hint: if 'Attention' is the model author's own class, pass --custom-layers FILE.py holding it"
    )
    out = tmp_path / "m.onnx"
    export(path, out, ExportOptions(custom_layers=(str(code),)))
    x = np.random.default_rng(0).uniform(-1, 1, (5, 6, 2)).astype("float32")
    (y,) = run_onnx(out, [x])
    assert np.abs(y - keras.ops.convert_to_numpy(model(x))).max() <= ATOL


def test_keras3_file_with_the_users_classes_and_a_module_that_re_exports_them(tmp_path, monkeypatch):
    code = tmp_path / "pkg_layers.py"
    code.write_text(
        textwrap.dedent(
            """
            import keras
            from keras import ops

            @keras.saving.register_keras_serializable(package="pkg")
            class Scorer(keras.layers.Layer):
                def build(self, shape):
                    self.v = self.add_weight(shape=(shape[-1], 1), name="v")

                def call(self, h):
                    w = ops.softmax(ops.squeeze(ops.matmul(ops.tanh(h), self.v), -1), axis=-1)
                    return ops.sum(h * ops.expand_dims(w, -1), axis=1)

            class Unregistered(keras.layers.Layer):
                def call(self, x, training):
                    return x * 2.0
            """
        )
    )
    (tmp_path / "reexport.py").write_text("from pkg_layers import Scorer, Unregistered  # noqa: F401\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    from edgeattn.convert.custom_layers import import_layers

    found = import_layers(["reexport"])
    assert {"Scorer", "pkg>Scorer", "Unregistered"} <= set(found)
    inp = keras.Input((None, 2))
    h = keras.layers.GRU(4, return_sequences=True)(inp)
    model = keras.Model(inp, keras.layers.Dense(1)(found["Unregistered"]()(found["Scorer"]()(h))))
    model.save(tmp_path / "mine.keras")
    with pytest.raises(UnsafeModelError) as refused:
        load_model(tmp_path / "mine.keras")
    assert "--custom-layers FILE.py holding class" in refused.value.hint
    out = tmp_path / "mine.onnx"
    export(tmp_path / "mine.keras", out, ExportOptions(custom_layers=("reexport",)))
    assert_edge_ready(out, {"GRU": 1})
    x = np.random.default_rng(1).normal(0, 1, (3, 9, 2)).astype("float32")
    (y,) = run_onnx(out, [x])
    assert np.abs(y - keras.ops.convert_to_numpy(model(x))).max() <= ATOL


def test_layer_code_written_for_standalone_keras_2_runs(tmp_path):
    """`from keras import backend as K` with K.dot/K.tanh/..., `keras.engine.topology.Layer`: Keras 2 code."""
    code = tmp_path / "old_keras_layers.py"
    code.write_text(
        textwrap.dedent(
            """
            from keras import backend as K
            from keras import initializers
            from keras.engine.topology import Layer

            class AttLayer(Layer):
                def __init__(self, attention_dim=8, **kwargs):
                    self.init = initializers.get("normal")
                    self.attention_dim = attention_dim
                    super().__init__(**kwargs)

                def build(self, input_shape):
                    self.W = self.add_weight(name="W", shape=(input_shape[-1], self.attention_dim), initializer=self.init)
                    self.b = self.add_weight(name="b", shape=(self.attention_dim,), initializer="zeros")
                    self.u = self.add_weight(name="u", shape=(self.attention_dim, 1), initializer=self.init)
                    super().build(input_shape)

                def call(self, x, mask=None):
                    uit = K.tanh(K.bias_add(K.dot(x, self.W), self.b))
                    ait = K.squeeze(K.dot(uit, self.u), -1)
                    ait = K.exp(ait - K.max(ait, axis=1, keepdims=True))
                    ait = ait / K.cast(K.sum(ait, axis=1, keepdims=True) + K.epsilon(), K.floatx())
                    return K.sum(x * K.expand_dims(ait), axis=1)

                def get_config(self):
                    return {**super().get_config(), "attention_dim": self.attention_dim}
            """
        )
    )
    from edgeattn.convert.custom_layers import import_layers

    layer = import_layers([str(code)])["AttLayer"]
    inp = keras.Input((7, 3))
    model = keras.Model(
        inp, keras.layers.Dense(1)(layer(5)(keras.layers.LSTM(6, return_sequences=True)(inp)))
    )
    model.save(tmp_path / "old.keras")
    out = tmp_path / "old.onnx"
    export(tmp_path / "old.keras", out, ExportOptions(custom_layers=(str(code),)))
    assert_edge_ready(out, {"LSTM": 1})
    x = np.random.default_rng(2).normal(0, 1, (4, 7, 3)).astype("float32")
    (y,) = run_onnx(out, [x])
    assert np.abs(y - keras.ops.convert_to_numpy(model(x))).max() <= ATOL


def test_a_registered_class_loads_from_an_unregistered_copy_of_its_code(tmp_path):
    """The file records ``Custom>BahdanauAttention``; the user's copy of the class has no decorator."""
    source = USER_LAYERS.read_text().replace("@keras.utils.register_keras_serializable()\n", "")
    assert "register_keras_serializable()\n" not in source
    (tmp_path / "copied_layers.py").write_text(source)
    out = tmp_path / "m.onnx"
    export(
        KERAS2 / "k2-user-attention.h5",
        out,
        ExportOptions(custom_layers=(str(tmp_path / "copied_layers.py"),)),
    )
    data = np.load(KERAS2 / "k2-user-attention.npz")
    (y,) = run_onnx(out, [data["x"]])
    assert np.abs(y - data["y"]).max() <= ATOL
