"""SavedModel folders without a Keras config, exported from the serving signature's graph (edgeattn.convert.tfgraph).

The committed folders (tests/fixtures/savedmodel/, made by scripts/make_savedmodel_graph_fixtures.py under TF
2.15.1) carry TF 2.15's own outputs on fixed inputs: the ONNX models must reproduce them (an independent
reference: not the TF that converted them). The hostile folders write a marker file when TensorFlow runs their
signature; they must be refused before anything loads them.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import ROOT, run_cli

FIXTURES = ROOT / "tests" / "fixtures" / "savedmodel"
GOOD = ("subclassed-lstm-attention", "subclassed-embedding-gru", "module-dense-attention")
HOSTILE = {
    "hostile-write-file": ("WriteFile", "cond/WriteFile", "cond_true_", "it writes files"),
    "hostile-py-function": ("EagerPyFunc", "EagerPyFunc", "__inference___call___", "Python code"),
    "hostile-numpy-function": ("PyFunc", "PyFunc", "__inference___call___", "Python code"),
}
MARKER = "edgeattn-marker"  # the hostile folders' marker, relative to the working folder of the process


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    """Folders made here with TF 2.21: a Keras 3 ``model.export`` (LSTM + Keras attention) and a
    ``tf.Module`` whose signature holds a plain ``tf.while_loop`` (no recurrent layer tf2onnx can fuse)."""
    folder = tmp_path_factory.mktemp("built")
    script = textwrap.dedent(
        """
        import sys
        import keras
        import tensorflow as tf

        inp = keras.Input((10, 2), name="x")
        h = keras.layers.LSTM(8, return_sequences=True)(inp)
        out = keras.layers.Dense(1)(keras.layers.GlobalAveragePooling1D()(keras.layers.Attention()([h, h])))
        keras.Model(inp, out).export(sys.argv[1] + "/keras3-export", verbose=False)

        class Loop(tf.Module):
            @tf.function(input_signature=[tf.TensorSpec([None, 6, 2], tf.float32, name="x")])
            def __call__(self, x):
                steps = tf.shape(x)[1]
                _, total = tf.while_loop(
                    lambda i, s: i < steps, lambda i, s: (i + 1, 0.5 * s + x[:, i, :]), (0, tf.zeros_like(x[:, 0])))
                return {"y": total}

        module = Loop()
        tf.saved_model.save(module, sys.argv[1] + "/while-loop", signatures={"serving_default": module.__call__})
        """
    )
    env_python = sys.executable
    subprocess.run([env_python, "-c", script, str(folder)], check=True, capture_output=True)
    return {"keras3-export": folder / "keras3-export", "while-loop": folder / "while-loop"}


@pytest.fixture(scope="module")
def exported(tmp_path_factory, built) -> dict[str, tuple[Path, subprocess.CompletedProcess]]:
    """Each good folder exported once through the console script."""
    out = tmp_path_factory.mktemp("exported")
    folders = {name: FIXTURES / name for name in GOOD} | {"keras3-export": built["keras3-export"]}
    done = {}
    for name, folder in folders.items():
        target = out / f"{name}.onnx"
        done[name] = (target, run_cli("export", folder, "-o", target))
    return done


def _meta(model: onnx.ModelProto) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}


def test_fixtures_are_graph_savedmodels_and_small():
    from edgeattn.convert import tfgraph

    for name in (*GOOD, *HOSTILE):
        folder = FIXTURES / name
        size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        assert tfgraph.is_graph_savedmodel(folder), name
        assert size < 1_000_000, (name, size)
    # the subclassed model has Keras metadata, but no layers config in it
    assert (FIXTURES / GOOD[0] / "keras_metadata.pb").is_file()
    assert not tfgraph.is_graph_savedmodel(FIXTURES / "subclassed-lstm-attention.npz")
    assert not tfgraph.is_graph_savedmodel(FIXTURES)


@pytest.mark.parametrize("name", GOOD)
def test_export_reproduces_tf215_outputs(name, exported):
    import onnxruntime as ort

    from edgeattn.core.files import sha256_of
    from edgeattn.graphs import graph

    path, done = exported[name]
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    model = onnx.load(path)
    meta = _meta(model)
    assert meta["edgeattn.source_format"] == "savedmodel-graph"
    assert meta["edgeattn.source_sha256"] == sha256_of(FIXTURES / name)
    assert graph.check_structure(model) == []
    assert {o.domain or "ai.onnx" for o in model.opset_import} <= {"ai.onnx", "ai.onnx.ml"}
    order = json.loads(meta["edgeattn.signature_outputs"])
    with np.load(FIXTURES / f"{name}.npz") as stored:
        feed = {k.split(":", 1)[1]: stored[k] for k in stored.files if k.startswith("input:")}
        want = [stored[f"output:{key}"] for key in order]
    session = ort.InferenceSession(path.read_bytes(), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == sorted(feed)  # the signature's input names
    got = session.run(None, feed)
    worst = max(float(np.max(np.abs(g - w))) for g, w in zip(got, want))
    print(f"{name}: {len(model.graph.node)} nodes, max abs error vs TF 2.15.1's stored outputs {worst:.3g}")
    assert worst < 1e-5


def test_output_names_are_the_signatures(exported):
    subclassed = onnx.load(exported["subclassed-lstm-attention"][0])
    module = onnx.load(exported["module-dense-attention"][0])
    assert [o.name for o in subclassed.graph.output] == ["y"]  # one prediction: y, as for Keras files
    assert [i.name for i in subclassed.graph.input] == ["input_1"]
    assert [o.name for o in module.graph.output] == ["attention", "scores"]
    assert json.loads(_meta(module)["edgeattn.signature_outputs"]) == ["attention", "scores"]


@pytest.mark.parametrize(
    ("name", "op"),
    [("subclassed-lstm-attention", "LSTM"), ("subclassed-embedding-gru", "GRU"), ("keras3-export", "LSTM")],
)
def test_recurrent_layer_is_one_fused_node(name, op, exported):
    path, done = exported[name]
    assert done.returncode == 0, done.stderr
    ops = [n.op_type for n in onnx.load(path).graph.node]
    assert ops.count(op) == 1 and "Loop" not in ops and "Scan" not in ops, ops


@pytest.mark.parametrize("name", [*GOOD, "keras3-export"])
def test_verify_against_the_folder(name, exported, built):
    path, _ = exported[name]
    folder = built[name] if name in built else FIXTURES / name
    done = run_cli("verify", path, "--keras", folder)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "verify: pass" in done.stdout


def test_verify_catches_a_moved_weight(exported, tmp_path):
    from onnx import numpy_helper

    path, _ = exported["subclassed-lstm-attention"]
    model = onnx.load(path)
    largest = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    array = numpy_helper.to_array(largest).copy()
    array.flat[0] += 0.5
    largest.CopyFrom(numpy_helper.from_array(array, largest.name))
    moved = tmp_path / "moved.onnx"
    onnx.save(model, moved)
    done = run_cli("verify", moved, "--keras", FIXTURES / "subclassed-lstm-attention")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "verify failed" in done.stderr


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_folder_is_refused_before_anything_runs(name, tmp_path):
    op, node, function, why = HOSTILE[name]
    done = run_cli("export", FIXTURES / name, "-o", "out.onnx", cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 2 and lines[1].startswith("hint: "), lines
    assert lines[0].startswith(f"error: refused to load: op {op} in node {node!r} of function '{function}")
    assert why in lines[0]
    assert "Traceback" not in done.stderr
    assert list(tmp_path.iterdir()) == []  # no marker, no model, no temporary file


def test_the_write_file_folder_is_armed_and_unsafe_skips_the_check(tmp_path):
    """With --unsafe the folder loads and TensorFlow runs its signature (export's parity reference): the marker
    appears. This is what the refusal above prevents."""
    done = run_cli("export", FIXTURES / "hostile-write-file", "-o", "out.onnx", "--unsafe", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / MARKER).is_file()


def test_verify_refuses_a_hostile_folder_too(exported, tmp_path):
    path, _ = exported["module-dense-attention"]
    done = run_cli("verify", path, "--keras", FIXTURES / "hostile-write-file", cwd=tmp_path)
    assert done.returncode == 2 and "refused to load: op WriteFile" in done.stderr
    assert not (tmp_path / MARKER).exists()


def test_a_loop_tf2onnx_cannot_fuse_fails_the_structure_check(built, tmp_path):
    done = run_cli("export", built["while-loop"], "-o", "out.onnx", cwd=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "is a Loop: a recurrent layer was not fused" in done.stderr
    assert list(tmp_path.iterdir()) == []


def _copy_with(folder: Path, tmp_path: Path, change) -> Path:
    """A copy of ``folder`` whose saved_model.pb was changed by ``change(meta_graph)`` (as data)."""
    import shutil

    from edgeattn.convert import tfgraph

    copy = tmp_path / folder.name
    shutil.copytree(folder, copy)
    saved = tfgraph.read_saved_model(copy)
    change(saved.meta_graphs[0])
    (copy / "saved_model.pb").write_bytes(saved.SerializeToString())
    return copy


def test_scan_follows_api_implements_alternatives(tmp_path):
    """Grappler may swap a call for a library function with the same api_implements: a ReadFile hidden in
    the cuDNN twin of the subclassed model's LSTM is refused, though no call reaches it."""
    from edgeattn.core import sandbox

    def hide(meta):
        twin = next(
            f
            for f in meta.graph_def.library.function
            if f.signature.name.startswith("__inference_gpu_lstm_with_fallback")
            and any(n.op == "CudnnRNN" for n in f.node_def)
        )
        node = twin.node_def.add(name="sneaky", op="ReadFile")
        node.input.append("Const")

    found = sandbox.parse("savedmodel", FIXTURES / "subclassed-lstm-attention")
    assert "CudnnRNN" in found["ops"] and found["refusals"] == [] and found["loops"] == 1
    copy = _copy_with(FIXTURES / "subclassed-lstm-attention", tmp_path, hide)
    refused = sandbox.parse("savedmodel", copy)["refusals"]
    assert [(r["op"], r["node"]) for r in refused] == [("ReadFile", "sneaky")]
    assert refused[0]["function"].startswith("__inference_gpu_lstm_with_fallback")


def test_scan_covers_load_time_functions_and_while_bodies(tmp_path):
    from edgeattn.core import sandbox

    def in_while_body(meta):
        body = next(f for f in meta.graph_def.library.function if f.signature.name.startswith("while_body"))
        body.node_def.add(name="queue", op="FIFOQueueV2")

    copy = _copy_with(FIXTURES / "subclassed-lstm-attention", tmp_path, in_while_body)
    refused = sandbox.parse("savedmodel", copy)["refusals"]
    assert [(r["op"], r["node"]) for r in refused] == [("FIFOQueueV2", "queue")], refused

    def resource_initializer(meta):
        # a resource whose _initialize function (run by tf.saved_model.load) writes a variable
        objects = meta.object_graph_def
        library = meta.graph_def.library
        init = library.function.add()
        init.signature.name = "__inference__initialize_99"
        init.node_def.add(name="assign", op="AssignVariableOp")
        fn = objects.nodes.add()
        fn.bare_concrete_function.concrete_function_name = init.signature.name
        resource = objects.nodes.add()
        resource.resource.device = ""
        resource.children.add(local_name="_initialize", node_id=len(objects.nodes) - 2)

    copy = _copy_with(FIXTURES / "module-dense-attention", tmp_path / "2", resource_initializer)
    refused = sandbox.parse("savedmodel", copy)["refusals"]
    assert [(r["op"], r["function"]) for r in refused] == [("AssignVariableOp", "__inference__initialize_99")]


def test_several_signatures_without_serving_default_are_refused_by_name(tmp_path):
    def rename(meta):
        sig = meta.signature_def["serving_default"]
        meta.signature_def["predict"].CopyFrom(sig)
        meta.signature_def["score"].CopyFrom(sig)
        del meta.signature_def["serving_default"]

    copy = _copy_with(FIXTURES / "module-dense-attention", tmp_path, rename)
    done = run_cli("export", copy, "-o", tmp_path / "out.onnx")
    assert done.returncode == 2
    assert "2 signatures and none is 'serving_default': predict, score" in done.stderr
    assert not (tmp_path / "out.onnx").exists()


def test_bench_times_the_signature_of_a_graph_folder(exported):
    """bench --keras takes a graph SavedModel: its serving signature is the TensorFlow contender."""
    path, _ = exported["subclassed-lstm-attention"]
    folder = FIXTURES / "subclassed-lstm-attention"
    done = run_cli("bench", path, "--keras", folder, "--batch", "1", "--seconds", "0.1")
    assert done.returncode == 0, done.stderr
    row = next(line for line in done.stdout.splitlines() if line.startswith("Keras under tf.function"))
    assert float(row.split()[-1]) < 1e-5  # the signature's outputs agree with the Predictor's
