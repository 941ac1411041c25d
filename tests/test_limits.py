"""Bad paths, huge files and configs, every nested object of a config, and temporary files no one can plant.

Each case runs through the installed CLI where a user would meet it: one ``error:`` line (and a hint), exit 2,
nothing written, nothing run. Parameter counts are compared with Keras's own ``count_params()``.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import pytest
from conftest import MODELS, ROOT, run_cli

from edgeattn.convert import loading, params
from edgeattn.core import files
from edgeattn.core.errors import InputError, UnsafeModelError

FIXTURES = ROOT / "tests" / "fixtures"


def _one_error(done, contains: str) -> None:
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines[0].startswith("error: ") and contains in lines[0], lines
    assert len(lines) <= 2 and "Traceback" not in done.stderr


# -- regular files only, and a size limit ----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["fifo", "dev-zero-link", "device"])
def test_not_a_regular_file_is_refused_before_it_is_read(kind, tmp_path):
    """A FIFO would block the reader forever; /dev/zero (also behind a link) would be copied until the disk is
    full. Each is refused at once, for a model, an ONNX file and an input file."""
    path = tmp_path / f"{kind}.keras"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "dev-zero-link":
        path.symlink_to("/dev/zero")
    else:
        path.symlink_to("/dev/null")
    out = tmp_path / "out.onnx"
    for argv in (
        ("export", path, "-o", out),
        ("inspect", path),
        ("predict", MODELS / "seed.onnx", path, "-o", tmp_path / "y.npy"),
    ):
        _one_error(run_cli(*argv), "is not a regular file")
    assert not out.exists() and not (tmp_path / "y.npy").exists()


def test_a_file_over_the_size_limit_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEATTN_MAX_FILE_MB", "0.05")  # the seed model is 0.1 MB
    _one_error(run_cli("inspect", MODELS / "seed.onnx"), "MB is over the limit of 0.05 MB")
    _one_error(run_cli("export", MODELS / "seed.keras", "-o", tmp_path / "s.onnx"), "MB is over the limit")
    # a SavedModel folder counts by its total
    _one_error(
        run_cli("export", FIXTURES / "savedmodel" / "sm-sequential-gru", "-o", tmp_path / "g.onnx"),
        "MB is over the limit",
    )
    assert not list(tmp_path.iterdir())


def test_the_private_copy_checks_the_open_file(tmp_path):
    """The copy that is checked and built from refuses a file that is not regular when it is opened."""
    link = tmp_path / "zero.h5"
    link.symlink_to("/dev/zero")
    with pytest.raises(InputError, match="is not a regular file"), files.private_copy(link):
        pass


# -- parameters a config implies -----------------------------------------------------------------------


def _keras_file(path: Path, config: dict) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("config.json", json.dumps(config))
        zf.writestr("metadata.json", json.dumps({"keras_version": "3.15.1"}))
    return path


def _sequential(*layers: dict) -> dict:
    inp = {"class_name": "InputLayer", "config": {"batch_shape": [None, 10, 1], "name": "x"}}
    return {"module": "keras", "class_name": "Sequential", "config": {"name": "s", "layers": [inp, *layers]}}


def test_a_config_that_asks_for_a_huge_layer_is_refused_before_keras_builds_it(tmp_path):
    huge = {"module": "keras.layers", "class_name": "LSTM", "config": {"name": "big", "units": 10**6}}
    src = _keras_file(tmp_path / "huge.keras", _sequential(huge))
    done = run_cli("export", src, "-o", tmp_path / "h.onnx")  # refused, not built (it would need 16 TB)
    _one_error(done, "LSTM layer 'big' implies 4,000,008,000,000 parameters, over the limit of 1,000,000,000")
    assert "--max-params" in done.stderr
    done = run_cli("export", MODELS / "seed.keras", "-o", tmp_path / "s.onnx", "--max-params", "1000")
    _one_error(done, "over the limit of 1,000 (--max-params")


@pytest.mark.parametrize(
    "layers",
    [
        # the input given on a Keras 2 Sequential's first layer
        [
            {
                "class_name": "Dense",
                "config": {"name": "d", "units": 10**5, "batch_input_shape": [None, 10**5]},
            }
        ],
        # a Reshape or Flatten before the Dense: the width it gets is the reshaped one
        [
            {"class_name": "InputLayer", "config": {"batch_shape": [None, 10**5, 1]}},
            {"class_name": "Reshape", "config": {"name": "r", "target_shape": [10**5]}},
            {"class_name": "Dense", "config": {"name": "d", "units": 10**5}},
        ],
        [
            {"class_name": "InputLayer", "config": {"batch_shape": [None, 1000, 100]}},
            {"class_name": "Flatten", "config": {"name": "f"}},
            {"class_name": "Dense", "config": {"name": "d", "units": 10**5}},
        ],
    ],
    ids=["first-layer-input", "reshape", "flatten"],
)
def test_the_width_a_dense_gets_is_followed(layers):
    config = {"class_name": "Sequential", "config": {"name": "s", "layers": layers}}
    with pytest.raises(InputError, match=r"Dense layer 'd' implies 10,000,100,000 parameters"):
        params.check(config, 10**9, "m.h5")


def test_many_layers_over_the_limit_together_are_refused():
    dense = [
        {"class_name": "Dense", "config": {"name": f"d{i}", "units": 1000}} for i in range(3)
    ]  # 1 x 1000 + 1000 x 1000 + 1000 x 1000 (+ biases)
    counts, _ = params.count(_sequential(*dense))
    assert [c.parameters for c in counts] == [0, 2000, 1_001_000, 1_001_000]
    with pytest.raises(
        InputError, match=r"its layers imply 2,004,000 parameters, over the limit of 1,500,000"
    ):
        params.check(_sequential(*dense), 1_500_000, "m.keras")


@pytest.mark.parametrize(
    "source",
    [
        MODELS / "seed.keras",
        FIXTURES / "legacy" / "a500-embedding-bilstm-bahdanau.h5",
        FIXTURES / "legacy" / "a500-bigru-bahdanau.h5",
        FIXTURES / "keras2" / "k2-mha-bilstm.h5",
        FIXTURES / "keras2" / "k215-bilstm-mha-bn.keras",
        FIXTURES / "savedmodel" / "sm-transformer",
    ],
    ids=lambda p: p.name,
)
def test_the_count_never_exceeds_what_keras_builds(source):
    """The count is a lower bound of Keras's own count_params() (so it refuses no real model for a guess), and
    close to it on these models (what it leaves out: biases and small vectors of some layers)."""
    loaded = loading.load_model(source)
    counts, _ = params.count(loaded.source.config)
    ours = sum(c.parameters for c in counts)
    keras = loaded.model.count_params()
    assert ours <= keras, (ours, keras)
    assert ours >= 0.9 * keras, (ours, keras)


# -- every nested object of a config is checked, and no value may name a file --------------------------------


def _dense_with(**extra) -> dict:
    layer = {"module": "keras.layers", "class_name": "Dense", "config": {"name": "d", "units": 1, **extra}}
    return _sequential(layer)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            _dense_with(activation={"module": "keras.layers", "class_name": "TFSMLayer",
                                    "config": {"filepath": "x"}}),
            "TFSMLayer in Dense 'd': TFSMLayer is not a Keras object edgeattn knows",
        ),
        (
            _dense_with(kernel_initializer={"module": "keras.initializers", "class_name": "FromFile",
                                            "config": {}}),
            "FromFile in Dense 'd': FromFile is not a Keras object edgeattn knows",
        ),
        (_dense_with(note="/etc/passwd"), "its 'note' is the path '/etc/passwd'"),
        (_dense_with(vocab_file="words.txt"), "its 'vocab_file' names the file 'words.txt'"),
        (
            _sequential({"class_name": "MyBlock", "config": {"name": "b", "inner": {
                "class_name": "StringLookup", "config": {"vocabulary": "../vocab.txt"}}}}),
            "StringLookup in MyBlock 'b': StringLookup is not a Keras object edgeattn knows",
        ),
        (
            _sequential({"class_name": "MyBlock", "config": {"name": "b", "inner": {
                "class_name": "Lambda", "config": {"function": "x"}}}}),
            "Lambda in MyBlock 'b': a Lambda layer holds Python code",
        ),
        (
            _sequential({"class_name": "MyBlock", "config": {"name": "b", "table": "~/secret.csv"}}),
            "its 'table' is the path '~/secret.csv'",
        ),
    ],
)  # fmt: skip
def test_every_nested_object_and_value_is_checked(config, message):
    with pytest.raises(UnsafeModelError) as caught:
        loading.check_config(config, custom=frozenset({"MyBlock"}))
    assert message in str(caught.value) + " ".join(caught.value.details)


def test_a_layer_given_as_an_activation_is_refused_through_the_cli(tmp_path):
    tfsm = {"module": "keras.layers", "class_name": "TFSMLayer", "config": {"filepath": "evil"}}
    src = _keras_file(tmp_path / "act.keras", _dense_with(activation=tfsm))
    _one_error(run_cli("export", src, "-o", tmp_path / "a.onnx"), "TFSMLayer in Dense 'd'")


def test_plain_keras_objects_still_pass():
    glorot = {"module": "keras.initializers", "class_name": "GlorotUniform", "config": {"seed": None}}
    policy = {"module": "keras", "class_name": "DTypePolicy", "config": {"name": "float32"}}
    loading.check_config(
        _dense_with(kernel_initializer=glorot, dtype=policy, activation="tanh", padding="a/b")
    )


# -- temporary files ----------------------------------------------------------------------------------------


def test_temporary_names_are_unpredictable_and_links_are_not_followed(tmp_path, monkeypatch):
    """A link planted where the temporary file goes (the old, predictable name) is neither followed nor
    written through; each write takes a new random name."""
    target = tmp_path / "model.onnx"
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    planted = tmp_path / f".model.onnx{files.TMP_MARK}{os.getpid()}"
    planted.symlink_to(victim)
    names = {files._temp_name(target) for _ in range(3)}
    assert len(names) == 3 and planted not in names
    files.write_atomic(target, b"data")
    assert target.read_bytes() == b"data" and victim.read_text() == "keep"
    real = files._temp_name(target)
    monkeypatch.setattr(files, "_temp_name", lambda path, kind="": real)
    real.symlink_to(victim)  # even at the name it picks, a link is refused, not followed
    with pytest.raises((OSError, InputError)):
        files.write_atomic(tmp_path / "model.onnx", b"other", force=True)
    assert victim.read_text() == "keep" and target.read_bytes() == b"data"
