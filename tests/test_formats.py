"""Every file users saved: Keras 2 SavedModel folders with their Keras metadata, old Sequential ``.h5`` configs,
``.keras`` files whose compile settings name unknown classes, and models that record no inputs.

The fixtures were saved by the real libraries (scripts/make_keras2_format_fixtures.py with TF 2.15.1,
scripts/make_keras3_fixtures.py with Keras 3); each ``.npz`` holds the outputs that the saving library itself
computed, the independent reference the ONNX outputs are compared with.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import ROOT, run_cli

from edgeattn.convert import legacy, loading
from edgeattn.core.errors import InputError, UnsafeModelError
from edgeattn.graphs import graph

FIXTURES = ROOT / "tests" / "fixtures"
SAVEDMODEL = FIXTURES / "savedmodel"
SEQUENTIAL = FIXTURES / "sequential"
KERAS3 = FIXTURES / "keras3"
REFERENCE_ATOL = 2e-6  # float32 over a few layers; what is reached is printed by the failing assertion
STANDARD = {"", "ai.onnx"}


def _onnx_outputs(path: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    (spec,) = session.get_inputs()
    return session.run(None, {spec.name: x.astype("int32" if spec.type == "tensor(int32)" else x.dtype)})[0]


def _check_against_reference(out: Path, reference: Path, recurrent: int) -> float:
    model = onnx.load(out)
    ops = [n.op_type for n in model.graph.node]
    assert {n.domain for n in model.graph.node} <= STANDARD
    assert not set(ops) & graph.LOOP_OPS
    assert sum(op in graph.RECURRENT_OPS for op in ops) == recurrent, ops
    stored = np.load(reference)
    error = float(np.abs(_onnx_outputs(out, stored["x"]) - stored["y"]).max())
    assert error <= REFERENCE_ATOL, error
    return error


# -- SavedModel folders with Keras metadata -------------------------------------------------------------------

SAVEDMODELS = {  # name -> (fused recurrent nodes, more export arguments)
    "sm-lstm-attention": (1, ()),
    "sm-transformer": (0, ()),
    "sm-sequential-gru": (1, ()),
    "sm-custom-layer": (1, ("--custom-layers", SAVEDMODEL / "sm_layers.py")),
    "sm-bilstm-embedding": (1, ()),
    "sm-attention-package": (1, ("--attention-weights",)),  # sub-layers named by attribute in the checkpoint
    # TF 2.3.4: no keras_metadata.pb; the Keras metadata is read from saved_model.pb's object graph
    "sm23-lstm-attention": (1, ()),
    "sm23-sequential-bigru": (1, ()),
    "sm23-causal-attention": (1, ()),  # AdditiveAttention(causal=True) -> use_causal_mask=True
}


@pytest.mark.parametrize("name", sorted(SAVEDMODELS))
def test_savedmodel_folder_exports_and_matches_tf215(name, tmp_path):
    recurrent, args = SAVEDMODELS[name]
    out = tmp_path / f"{name}.onnx"
    done = run_cli("export", SAVEDMODEL / name, "-o", out, *args)
    assert done.returncode == 0, done.stderr
    _check_against_reference(out, SAVEDMODEL / f"{name}.npz", recurrent)
    meta = {p.key: p.value for p in onnx.load(out).metadata_props}
    assert meta["edgeattn.source_format"] == "savedmodel-keras"
    assert meta["edgeattn.source"] == name
    assert not any(
        "loss" in v or "optimizer" in v for v in meta.values()
    )  # compile settings recorded nowhere


def test_savedmodel_verifies_layer_by_layer_through_the_cli(tmp_path):
    src = SAVEDMODEL / "sm-lstm-attention"
    out = tmp_path / "sm.onnx"
    assert run_cli("export", src, "-o", out).returncode == 0
    done = run_cli("verify", out, "--keras", src)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "layer (every output of each" in done.stdout
    assert "  lstm" in done.stdout and "verify: pass" in done.stdout
    inspected = run_cli("inspect", out)
    assert "source_format        savedmodel-keras (a Keras 2 SavedModel folder" in inspected.stdout


def test_savedmodel_weights_come_from_the_checkpoint_by_layer():
    """Each layer's arrays are the checkpoint's, in the layer's own order (not the root's flat list)."""
    import tensorflow as tf

    folder = SAVEDMODEL / "sm-transformer"
    model = loading.load_model(folder).model
    reader = tf.train.load_checkpoint(str(folder / "variables" / "variables"))
    head = model.layers[-1]  # the output Dense: the only (16, 1) array of the checkpoint
    shapes = reader.get_variable_to_shape_map()
    (key,) = [k for k, shape in shapes.items() if shape == [16, 1] and not k.startswith("optimizer/")]
    np.testing.assert_array_equal(head.kernel.numpy(), reader.get_tensor(key))
    norms = [layer for layer in model.layers if "layer_normalization" in layer.name]
    assert len(norms) == 4 and len({float(n.gamma.numpy().sum()) for n in norms}) == 4  # each its own


def test_savedmodel_lambda_is_refused_by_name_and_never_runs(tmp_path, monkeypatch):
    marker = tmp_path / "marker"
    monkeypatch.setenv("EDGEATTN_MARKER", str(marker))
    out = tmp_path / "l.onnx"
    done = run_cli("export", SAVEDMODEL / "sm-lambda", "-o", out)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert re.fullmatch(
        r"error: refused to load: Lambda layer 'lambda' in Functional 'model_\d+': a Lambda layer holds Python code",
        lines[0],
    ), lines
    assert "Traceback" not in done.stderr
    assert not marker.exists() and not out.exists()


def test_folder_that_is_not_a_savedmodel(tmp_path):
    done = run_cli("export", tmp_path, "-o", tmp_path / "x.onnx")
    assert done.returncode == 2
    assert done.stderr.startswith(f"error: {tmp_path} is a folder without saved_model.pb: not a SavedModel")


def test_savedmodel_with_a_symlink_inside_is_refused(tmp_path):
    folder = tmp_path / "sm"
    shutil.copytree(SAVEDMODEL / "sm-sequential-gru", folder)
    (folder / "assets").mkdir(exist_ok=True)
    (folder / "assets" / "vocab.txt").symlink_to("/etc/passwd")
    with pytest.raises(InputError, match="is a symbolic link"):
        loading.load_model(folder)


def test_damaged_keras_metadata_is_one_clear_error(tmp_path):
    folder = tmp_path / "sm"
    shutil.copytree(SAVEDMODEL / "sm-sequential-gru", folder)
    data = (folder / "keras_metadata.pb").read_bytes()
    (folder / "keras_metadata.pb").write_bytes(data[: len(data) // 2])
    done = run_cli("export", folder, "-o", tmp_path / "x.onnx")
    assert done.returncode == 2
    assert "keras_metadata.pb is damaged" in done.stderr.splitlines()[0], done.stderr


def test_keras_metadata_reader_matches_tensorflows_protobuf():
    """The hand-written wire-format reader gives what TensorFlow's own SavedMetadata class parses."""
    from tensorflow.python.keras.protobuf import saved_metadata_pb2

    path = SAVEDMODEL / "sm-transformer" / "keras_metadata.pb"
    parsed = saved_metadata_pb2.SavedMetadata()
    parsed.ParseFromString(path.read_bytes())
    ours = loading.savedmodel.read_metadata(path.parent)
    assert len(ours) == len(parsed.nodes) > 10
    for node, reference in zip(ours, parsed.nodes):
        assert node["path"] == reference.node_path
        assert node["identifier"] == reference.identifier
        assert node["metadata"] == json.loads(reference.metadata)


# -- compile settings -----------------------------------------------------------------------------------------


def test_compile_config_naming_an_unknown_loss_is_dropped(tmp_path):
    """A tf.keras 2.15 .keras whose compile_config names a tensorflow_addons loss exports like any other."""
    src = FIXTURES / "keras2" / "k215-compile-addons.keras"
    out = tmp_path / "c.onnx"
    done = run_cli("export", src, "-o", out)
    assert done.returncode == 0, done.stderr
    _check_against_reference(out, FIXTURES / "keras2" / "k215-compile-addons.npz", 1)
    assert "Addons" not in out.read_bytes().decode("latin-1")
    meta = {p.key: p.value for p in onnx.load(out).metadata_props}
    assert meta["edgeattn.source_format"] == "keras-keras2"


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_tf_keras_215_files_of_mha_and_batchnorm(suffix, tmp_path):
    """tf.keras 2.15 records MultiHeadAttention's build input (query only) and BatchNormalization's axis as a
    list: both are read as Keras 2 meant them."""
    from edgeattn.convert.export import export

    out = tmp_path / "m.onnx"
    export(FIXTURES / "keras2" / f"k215-bilstm-mha-bn{suffix}", out)
    _check_against_reference(out, FIXTURES / "keras2" / "k215-bilstm-mha-bn.npz", 1)


def test_compile_settings_never_reach_the_check():
    config = {
        "class_name": "Functional",
        "config": {"layers": [], "name": "m"},
        "compile_config": {"loss": {"class_name": "Evil", "module": "os", "config": {}}},
        "training_config": {"optimizer_config": {"class_name": "Lambda", "config": {}}},
    }
    clean = loading.without_compile_settings(config)
    assert clean == {"class_name": "Functional", "config": {"layers": [], "name": "m"}}
    with pytest.raises(UnsafeModelError):
        loading.check_config(config)  # the walk itself would refuse them
    loading.check_config(clean)
    # a layer's own config key of that name is not a compile setting: only keys beside a class_name go
    kept = {"units": 3, "compile_config": 1}
    assert loading.without_compile_settings(kept) == kept


# -- old Sequential files -------------------------------------------------------------------------------------

SEQUENTIALS = {  # name -> (the input Keras 2 built: shape without the batch, dtype), fused recurrent nodes
    "k224-embedding-lstm": (((30,), "int32"), 1),
    "k20-list-gru": (((12, 3), "float32"), 1),
    "k1-input-dim-lstm": (((12, 3), "float32"), 1),
    "k2-input-shape-dense": (((12, 3), "float32"), 0),
    "k2-input-dim-dense": (((5,), "float32"), 0),
    "k215-embedding-free": ((("time",), "int32"), 1),
}


@pytest.mark.parametrize("name", sorted(SEQUENTIALS))
def test_old_sequential_file_gets_the_input_keras2_built(name, tmp_path):
    from edgeattn.convert.export import export

    (shape, dtype), recurrent = SEQUENTIALS[name]
    out = tmp_path / f"{name}.onnx"
    export(SEQUENTIAL / f"{name}.h5", out)
    (spec,) = onnx.load(out).graph.input
    dims = tuple(d.dim_value or d.dim_param for d in spec.type.tensor_type.shape.dim)
    assert dims == ("batch", *shape)
    assert onnx.helper.tensor_dtype_to_np_dtype(spec.type.tensor_type.elem_type) == np.dtype(dtype)
    _check_against_reference(out, SEQUENTIAL / f"{name}.npz", recurrent)


@pytest.mark.parametrize(
    ("cls", "config", "shape"),
    [
        (
            "Embedding",
            {"batch_input_shape": [None, 300], "input_length": 300, "input_dim": 5000},
            [None, 300],
        ),
        ("Embedding", {"input_dim": 5000, "input_length": 40}, [None, 40]),
        ("Embedding", {"input_dim": 5000}, None),
        ("LSTM", {"batch_input_shape": [8, 12, 3]}, [8, 12, 3]),
        ("LSTM", {"batch_shape": [None, None, 3]}, [None, None, 3]),
        ("LSTM", {"input_shape": [12, 3]}, [None, 12, 3]),
        ("LSTM", {"input_dim": 3, "input_length": 12}, [None, 12, 3]),
        ("GRU", {"input_dim": 3}, [None, None, 3]),
        ("Dense", {"input_dim": 5}, [None, 5]),
        ("Dense", {"input_shape": {"class_name": "__tuple__", "items": [4, 5]}}, [None, 4, 5]),
        ("Dense", {"units": 3}, None),
    ],
)
def test_input_shape_of_each_keras2_form(cls, config, shape):
    assert legacy.input_shape_of(cls, config) == shape


def test_sequential_rewrite_inserts_the_input_layer_and_drops_the_keys():
    old = {
        "class_name": "Sequential",
        "config": [
            {"class_name": "Embedding", "config": {"name": "e", "input_dim": 50, "output_dim": 8,
                                                   "batch_input_shape": [None, 30], "input_length": 30}},
            {"class_name": "LSTM", "config": {"name": "l", "units": 4, "input_dim": 8, "input_length": 30}},
        ],
    }  # fmt: skip
    new = legacy.rewrite(old).config
    first, embedding, lstm = new["config"]["layers"]
    assert first == {
        "class_name": "InputLayer",
        "config": {"batch_shape": [None, 30], "dtype": "int32", "name": "e_input"},
    }
    assert embedding["config"] == {"name": "e", "input_dim": 50, "output_dim": 8}
    assert lstm["config"] == {"name": "l", "units": 4}


# -- models that record no inputs; the author's class under a built-in name ------------------------------------


def test_subclassed_h5_needs_input_spec_and_then_exports(tmp_path):
    src = KERAS3 / "k3-subclassed.h5"
    custom = ("--custom-layers", KERAS3 / "subclassed_layers.py")
    out = tmp_path / "sub.onnx"
    done = run_cli("export", src, "-o", out, *custom)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"error: {src} records no input shapes (a subclassed SensorModel is built by its first call)",
        'hint: give them with --input-spec, e.g. --input-spec "x:float32[batch,10,1]" (once per input)',
    ]
    assert not out.exists()
    done = run_cli("export", src, "-o", out, *custom, "--input-spec", "x:float32[batch,12,3]")
    assert done.returncode == 0, done.stderr
    assert "input   x (batch, 12, 3) float32" in done.stdout
    _check_against_reference(out, KERAS3 / "k3-subclassed.npz", 1)
    checked = run_cli("verify", out, "--keras", src, *custom)  # the inputs come from the ONNX file
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_authors_class_wins_over_the_builtin_of_that_name(tmp_path):
    src = KERAS3 / "k3-user-named.h5"
    out = tmp_path / "u.onnx"
    done = run_cli("export", src, "-o", out)
    assert done.returncode == 2  # Keras' own AdditiveAttention cannot take the author's config
    assert "--custom-layers" in done.stderr.splitlines()[-1]
    done = run_cli("export", src, "-o", out, "--custom-layers", KERAS3 / "subclassed_layers.py")
    assert done.returncode == 0, done.stderr
    _check_against_reference(out, KERAS3 / "k3-user-named.npz", 1)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("x:float32[batch,10,1]", loading.InputShape("x", "float32", (None, 10, 1))),
        ("tokens:int32[batch,time]", loading.InputShape("tokens", "int32", (None, None))),
        ("x[b,12,3]", loading.InputShape("x", "float32", (None, 12, 3))),
    ],
)
def test_parse_input_spec(text, expected):
    assert loading.parse_input_spec(text) == expected


@pytest.mark.parametrize(
    "text",
    ["x:float32", "x:complex64[batch,3]", "x:float32[batch,3.5]", "[batch,3]", "x[10,1]", "x[batch,²]"],
)
def test_parse_input_spec_refuses_what_it_cannot_read(text):
    with pytest.raises(InputError, match="--input-spec"):
        loading.parse_input_spec(text)


def test_bench_builds_a_subclassed_source_on_the_onnx_inputs(tmp_path):
    """bench --keras on a file that records no inputs: the child builds it on the ONNX model's inputs."""
    src = KERAS3 / "k3-subclassed.h5"
    custom = ("--custom-layers", KERAS3 / "subclassed_layers.py")
    out = tmp_path / "sub.onnx"
    assert run_cli("export", src, "-o", out, *custom, "--input-spec", "x:float32[batch,12,3]").returncode == 0
    done = run_cli("bench", out, "--keras", src, *custom, "--batch", "1", "--seconds", "0.1")
    assert done.returncode == 0, done.stderr
    row = next(line for line in done.stdout.splitlines() if line.startswith("Keras under tf.function"))
    assert float(row.split()[-1]) < 1e-5


def test_time_major_file_is_refused_by_layer_name(tmp_path):
    out = tmp_path / "tm.onnx"
    done = run_cli("export", FIXTURES / "keras2" / "k215-time-major.h5", "-o", out)
    assert done.returncode == 2
    assert "LSTM layer 'lstm' has time_major=True" in done.stderr.splitlines()[0], done.stderr
    assert not out.exists()
