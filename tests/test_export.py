"""The export: structure of the graph, parity with Keras, metadata, and what it refuses."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import run_cli

from edgeattn.convert.export import ExportOptions, export
from edgeattn.core.errors import CheckFailedError, OutputExistsError
from edgeattn.graphs import graph


def test_graph_is_standard_with_one_fused_lstm(seed_onnx_plain):
    model = onnx.load(seed_onnx_plain)
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("LSTM") == 1
    assert not {"Loop", "Scan"} & set(ops)
    assert {n.domain for n in model.graph.node} <= {"", "ai.onnx"}
    assert {o.domain for o in model.opset_import} <= {"", "ai.onnx"}
    assert graph.check_structure(model, expect_recurrent=1) == []
    # The zero initial states tf2onnx builds from Shape/Expand are gone: the LSTM takes only x, W, R, B.
    lstm = next(n for n in model.graph.node if n.op_type == "LSTM")
    assert len(lstm.input) <= 4
    assert len(model.graph.node) <= 25


def test_the_attention_products_take_fewer_kernels(seed_onnx):
    """The seed's Dense over [context, last state] is a Gemm of the parts, and its scores are a row whose
    Softmax feeds the weighted sum directly (edgeattn.graphs.matmuls)."""
    model = onnx.load(seed_onnx)
    assert "Concat" not in [n.op_type for n in model.graph.node]
    softmax = next(n for n in model.graph.node if n.op_type == "Softmax")
    assert sorted(n.op_type for n in model.graph.node if softmax.output[0] in n.input) == [
        "MatMul",
        "Squeeze",
    ]


def test_batch_axis_is_dynamic_and_io_named(seed_onnx, seed_onnx_plain):
    plain = onnx.load(seed_onnx_plain)
    assert [i.name for i in plain.graph.input] == ["x"]
    assert [o.name for o in plain.graph.output] == ["y"]
    dims = plain.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and dims[1].dim_value == 10 and dims[2].dim_value == 1
    assert [o.name for o in onnx.load(seed_onnx).graph.output] == ["y", "attention_weights"]


@pytest.mark.parametrize("batch", [1, 7, 64])
def test_onnx_matches_keras(seed_keras, seed_onnx_plain, batch):
    import keras

    model = keras.saving.load_model(seed_keras)
    x = np.random.default_rng(batch).random((batch, 10, 1), dtype=np.float32)
    got = ort.InferenceSession(str(seed_onnx_plain), providers=["CPUExecutionProvider"]).run(None, {"x": x})[
        0
    ]
    want = np.asarray(model(x))
    assert got.shape == want.shape == (batch, 1)
    assert np.abs(got - want).max() <= 1e-5  # what is reached is ~3e-7


def test_metadata_records_provenance(seed_keras, seed_onnx):
    from edgeattn.core.files import sha256_of

    meta = {p.key: p.value for p in onnx.load(seed_onnx).metadata_props}
    assert meta["edgeattn.source"] == "seed.keras"
    assert meta["edgeattn.source_sha256"] == sha256_of(seed_keras)
    assert meta["edgeattn.opset"] == "17"
    for key in ("keras_version", "tensorflow_version", "tf2onnx_version", "onnx_version", "version"):
        assert meta[f"edgeattn.{key}"]
    assert json.loads(meta["edgeattn.inputs"]) == [
        {"name": "x", "shape": ["batch", 10, 1], "dtype": "float32"}
    ]
    # the recorded figure, checked against Keras and onnxruntime run here on the stored inputs (a case the
    # export's check covered): the export's own error can be no smaller than what this test measures
    import keras
    import onnxruntime as ort

    from edgeattn.convert.layers import with_attention_output
    from edgeattn.runtime import decode_array

    golden = json.loads(meta["edgeattn.golden"])
    assert set(golden["outputs"]) == {"y", "attention_weights"}
    x = decode_array(golden["inputs"]["x"])
    want = [np.asarray(a) for a in with_attention_output(keras.saving.load_model(seed_keras), None)(x)]
    got = ort.InferenceSession(str(seed_onnx), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    measured = max(float(np.abs(g - w).max()) for g, w in zip(got, want))
    recorded = json.loads(meta["edgeattn.parity"])
    # two sessions may round differently; the recorded figure is the export's, on the same seeded cases
    assert measured <= recorded["max_abs"] * 1.5 + 1e-7 and recorded["max_abs"] < 1e-5, (measured, recorded)
    assert (recorded["atol"], recorded["rtol"]) == (1e-4, 1e-5)
    for name, keras_output in zip(("y", "attention_weights"), want):  # the stored outputs are Keras's
        np.testing.assert_allclose(decode_array(golden["outputs"][name]), keras_output, atol=1e-6)


def test_existing_output_is_kept_without_force(seed_keras, tmp_path):
    out = tmp_path / "m.onnx"
    out.write_bytes(b"precious")
    with pytest.raises(OutputExistsError):
        export(seed_keras, out)
    assert out.read_bytes() == b"precious"
    export(seed_keras, out, ExportOptions(force=True, golden=False))
    assert onnx.load(out).graph.node


def test_failed_parity_writes_nothing(seed_keras, tmp_path):
    out = tmp_path / "m.onnx"
    with pytest.raises(CheckFailedError, match="parity"):
        # float32 round-off exceeds a tolerance of zero
        export(seed_keras, out, ExportOptions(atol=0.0, rtol=0.0, golden=False))
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_structure_check_reports_loops_and_vendor_ops(seed_onnx_plain):
    model = onnx.load(seed_onnx_plain)
    vendor = onnx.helper.make_node("FusedMatMul", ["y", "y"], ["z"], domain="com.microsoft", name="fmm")
    model.graph.node.append(vendor)
    model.opset_import.append(onnx.helper.make_opsetid("com.microsoft", 1))
    problems = graph.check_structure(model)
    assert any("com.microsoft:FusedMatMul" in p for p in problems)
    assert any("non-standard opset domain 'com.microsoft'" in p for p in problems)
    lstm_less = onnx.load(seed_onnx_plain)
    assert graph.check_structure(lstm_less, expect_recurrent=2) == [
        "expected at least 2 fused recurrent node(s), found 1"
    ]


@pytest.mark.parametrize(
    ("inner", "cause"),
    [
        (lambda L: L.GRU(8, activation="elu", return_sequences=True), "uses activation='elu'"),
        (lambda L: L.GRU(4, return_state=True), "has return_state=True"),
    ],
)
def test_recurrent_layers_inside_bidirectional_are_checked_by_name(inner, cause, tmp_path):
    import keras

    L = keras.layers
    inp = L.Input((6, 2), batch_size=2)
    out = L.Bidirectional(inner(L), name="bi")(inp)
    out = out[0] if isinstance(out, (list, tuple)) else out
    model = keras.Model(inp, L.Dense(1)(L.Flatten()(out)))
    model.save(tmp_path / "bi.keras")
    result = run_cli("export", tmp_path / "bi.keras", "-o", tmp_path / "bi.onnx")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert lines[0] == "error: cannot export: 2 problems:"
    for direction, line in zip(("forward_", "backward_"), lines[1:3]):
        assert (
            line.strip().startswith(f"'{direction}") and "(in Bidirectional 'bi')" in line and cause in line
        )
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "bi.onnx").exists()


def test_the_recorded_source_path_is_relative_to_the_export(seed_keras, tmp_path):
    import os

    out_dir = tmp_path / "deep" / "er"
    out_dir.mkdir(parents=True)
    export(seed_keras, out_dir / "m.onnx", ExportOptions(golden=False))
    recorded = {p.key: p.value for p in onnx.load(out_dir / "m.onnx").metadata_props}["edgeattn.source_path"]
    assert not os.path.isabs(recorded)
    assert (out_dir / recorded).resolve() == seed_keras.resolve()
    # verify does not follow it out of the model's folder (issue 25): the user names the source
    result = run_cli("verify", out_dir / "m.onnx")
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"(recorded at {recorded!r}, not followed)" in result.stderr
    assert run_cli("verify", out_dir / "m.onnx", "--keras", seed_keras).returncode == 0


def test_a_speed_rewrite_that_breaks_is_skipped_not_the_export(seed_keras, tmp_path, monkeypatch):
    from edgeattn.graphs import fusion, matmuls, shapes

    def broken(*_args, **_kwargs):
        raise RuntimeError("a graph this rewrite cannot handle")

    for module, name in (
        (shapes, "freeze_reshapes"),
        (fusion, "fuse_layer_norms"),
        (fusion, "plain_gather_indices"),
        (matmuls, "split_concat_products"),
        (matmuls, "row_scores"),
    ):
        monkeypatch.setattr(module, name, broken)
    result = export(seed_keras, tmp_path / "seed.onnx")
    assert (tmp_path / "seed.onnx").stat().st_size == result.size_bytes
    import keras
    import onnxruntime as ort

    x = np.random.default_rng(8).normal(0, 2, (16, 10, 1)).astype(np.float32)  # Keras and onnxruntime, here
    got = ort.InferenceSession(str(tmp_path / "seed.onnx"), providers=["CPUExecutionProvider"]).run(
        None, {"x": x}
    )
    assert np.abs(got[0] - np.asarray(keras.saving.load_model(seed_keras)(x))).max() < 1e-5
