"""Safe loading: the config is checked as data before Keras deserializes anything."""

from __future__ import annotations

import json
import zipfile

import keras
import pytest

from edgeattn.convert.legacy import rewrite
from edgeattn.convert.loading import check_config, read_config
from edgeattn.core.errors import InputError, UnsafeModelError


def _keras_zip_with(tmp_path, config: dict):
    path = tmp_path / "hostile.keras"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("config.json", json.dumps(config))
        zf.writestr("metadata.json", json.dumps({"keras_version": "3.15.1"}))
    return path


def _functional(layers):
    return {"module": "keras.src.models.functional", "class_name": "Functional",
            "config": {"name": "m", "layers": layers}}  # fmt: skip


def _lambda_model_that_writes(marker):
    # The path is a constant inside the code (no closure), as in a hostile file; it runs when Keras rebuilds
    # the layer's graph, i.e. while loading.
    touch = eval(f"lambda x: (open({str(marker)!r}, 'w').close(), x)[1]")
    return keras.Sequential([keras.Input((3,)), keras.layers.Lambda(touch, name="evil")])


def test_lambda_in_a_keras_file_is_refused_before_anything_runs(tmp_path):
    from edgeattn.convert.loading import load_model

    marker = tmp_path / "ran"
    path = tmp_path / "lambda.keras"
    _lambda_model_that_writes(str(marker)).save(path)
    marker.unlink()
    with pytest.raises(UnsafeModelError, match="Lambda layer 'evil'"):
        load_model(path)
    assert not marker.exists()
    load_model(path, unsafe=True)  # the user asked: now the code does run
    assert marker.exists()


def test_nested_lambda_is_found():
    inner = {"module": "keras", "class_name": "Sequential", "config": {"name": "inner", "layers": [
        {"module": "keras.layers", "class_name": "Lambda", "config": {"name": "evil", "function": "x"}}]}}  # fmt: skip
    with pytest.raises(UnsafeModelError, match="Lambda layer 'evil'"):
        check_config(_functional([inner]))


def test_config_naming_os_system_is_refused():
    act = {"module": "os", "class_name": "function", "config": "system", "registered_name": "system"}
    dense = {"module": "keras.layers", "class_name": "Dense", "config": {"name": "d", "activation": act}}
    with pytest.raises(UnsafeModelError, match=r"os\.system"):
        check_config(_functional([dense]))


def test_unknown_layer_class_is_refused_with_the_known_list():
    layer = {"module": "keras.layers", "class_name": "TFSMLayer", "config": {"name": "outside"}}
    with pytest.raises(UnsafeModelError, match="TFSMLayer is not a layer edgeattn knows"):
        check_config(_functional([layer]))


def test_unsafe_lets_it_through():
    layer = {"module": "keras.layers", "class_name": "Lambda", "config": {"name": "l"}}
    check_config(_functional([layer]), unsafe=True)


def test_seed_model_config_is_accepted(tmp_path):
    from edgeattn.convert.tasks import build_seed_model

    path = tmp_path / "seed.keras"
    build_seed_model().save(path)
    source = read_config(path)
    assert check_config(source.config) == ["Functional", "InputLayer", "LSTM", "Attention", "Dense"]


def test_not_a_model_files(tmp_path):
    empty = tmp_path / "empty.keras"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="neither"):
        read_config(empty)
    half = tmp_path / "half.keras"
    half.write_bytes(b"PK\x03\x04" + b"\0" * 20)
    with pytest.raises(InputError, match="damaged or truncated"):
        read_config(half)
    with pytest.raises(InputError, match=r"is a folder without saved_model\.pb: not a SavedModel"):
        read_config(tmp_path)


def test_rewrite_legacy_drops_time_major():
    config = {
        "class_name": "LSTM",
        "config": {"units": 3, "time_major": False, "implementation": 2},
    }
    assert rewrite(config).config == {"class_name": "LSTM", "config": {"units": 3}}


def test_rewrite_keeps_a_user_layers_own_arguments_of_those_names():
    """Only Keras' recurrent layers lose ``time_major``/``implementation``: a user's layer keeps its own."""
    user = {"class_name": "MyBlock", "config": {"units": 3, "implementation": "fast", "time_major": True}}
    wrapped = {"class_name": "Bidirectional", "config": {"layer": {"class_name": "GRU", "config": {
        "units": 2, "implementation": 1, "time_major": False}}}}  # fmt: skip
    assert rewrite(user).config == user
    inner = rewrite(wrapped).config["config"]["layer"]["config"]
    assert inner == {"units": 2, "reset_after": False}  # (a Keras 2 GRU without reset_after: False)


def test_time_major_true_is_refused_by_layer_name():
    config = {"class_name": "GRU", "config": {"name": "gru_tm", "units": 3, "time_major": True}}
    with pytest.raises(ValueError, match=r"GRU layer 'gru_tm' has time_major=True"):
        rewrite(config)


def test_what_was_checked_is_what_is_built(tmp_path, monkeypatch):
    """A file swapped on disk after its check (a race) cannot slip in: Keras builds from the checked copy."""
    from conftest import MODELS

    from edgeattn.convert import loading

    marker = tmp_path / "ran"
    hostile = tmp_path / "hostile.keras"
    _lambda_model_that_writes(marker).save(hostile)
    marker.unlink()  # building the model ran the Lambda once
    user_file = tmp_path / "model.keras"
    user_file.write_bytes((MODELS / "seed.keras").read_bytes())
    checked = loading.check_config

    def check_then_swap(*args, **kwargs):
        found = checked(*args, **kwargs)
        user_file.write_bytes(hostile.read_bytes())  # the file changes between the check and the build
        return found

    monkeypatch.setattr(loading, "check_config", check_then_swap)
    loaded = loading.load_model(user_file, unsafe=False)
    assert "evil" not in [layer.name for layer in loaded.model.layers]
    assert loaded.model.get_layer("attention") is not None
    assert loaded.source.path == user_file  # messages and metadata name the user's file
    assert not marker.exists()


def test_the_recorded_sha256_is_that_of_the_checked_copy(tmp_path, monkeypatch):
    """The sha256 the export records is that of what was checked and built, not of the file read again."""
    from conftest import MODELS

    from edgeattn.convert import loading
    from edgeattn.core.files import sha256_of

    user_file = tmp_path / "model.keras"
    user_file.write_bytes((MODELS / "seed.keras").read_bytes())
    read = loading.read_config

    def read_then_swap(*args, **kwargs):
        found = read(*args, **kwargs)
        user_file.write_bytes(b"swapped after the copy was read")
        return found

    monkeypatch.setattr(loading, "read_config", read_then_swap)
    loaded = loading.load_model(user_file)
    assert loaded.source.sha256 == sha256_of(MODELS / "seed.keras") != sha256_of(user_file)
