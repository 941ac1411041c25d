"""`edgeattn score` on a real local Ray cluster (2 CPUs here): outputs equal the single-process Predictor's row
for row, bad data is refused by name before anything runs, nothing is replaced without --force."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
from conftest import MODELS, run_cli

from edgeattn.errors import InputError, OutputExistsError
from edgeattn.export import ExportOptions, export
from edgeattn.runtime import Predictor

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
pytest.importorskip("ray")
from edgeattn.score import score  # noqa: E402

SEED = MODELS / "seed.onnx"


def write_parquet(path, samples, column="x"):
    pq.write_table(pa.table({column: [s.tolist() for s in samples]}), path)


def read_column(path, column) -> list:
    return pq.read_table(path).column(column).to_pylist()


def test_npy_and_parquet_equal_the_predictor_row_for_row(tmp_path):
    rng = np.random.default_rng(3)
    arrays = [rng.random((n, 10, 1), dtype=np.float32) for n in (1500, 7, 2200)]
    np.save(tmp_path / "a.npy", arrays[0])
    write_parquet(tmp_path / "b.parquet", arrays[1])
    write_parquet(tmp_path / "c.parquet", arrays[2])
    out = tmp_path / "scores"
    result = score(
        SEED, [tmp_path / "a.npy", str(tmp_path / "*.parquet")], out, attention=True, batch_size=512
    )
    predictor = Predictor(SEED)
    for name, x in zip(("a", "b", "c"), arrays):
        y, weights = predictor.predict(x, return_attention=True)
        table = pq.read_table(out / f"{name}.parquet")
        assert table.column_names == ["y", "attention_weights"]
        np.testing.assert_array_equal(np.asarray(table.column("y")), y[:, 0])
        np.testing.assert_array_equal(
            np.array(table.column("attention_weights").to_pylist(), np.float32), weights
        )
    manifest = json.loads((out / "manifest.json").read_text())
    assert [i["rows"] for i in manifest["inputs"]] == [1500, 7, 2200]
    assert [o["file"] for o in manifest["outputs"]] == ["a.parquet", "b.parquet", "c.parquet"]
    assert manifest["rows"] == result.rows == 3707
    assert manifest["workers"] == result.workers >= 1
    assert len(manifest["model_sha256"]) == 64 and manifest["seconds"] > 0
    assert sorted(p.name for p in out.iterdir()) == ["a.parquet", "b.parquet", "c.parquet", "manifest.json"]


def test_a_free_time_axis_with_rows_of_different_lengths(tmp_path):
    L = keras.layers
    inp = L.Input((None, 2))
    h = L.GRU(6, return_sequences=True)(inp)
    model = keras.Model(inp, L.Dense(1)(L.GlobalAveragePooling1D()(L.Attention()([h, h]))))
    model.save(tmp_path / "free.keras")
    export(tmp_path / "free.keras", tmp_path / "free.onnx", ExportOptions(attention_weights=True))
    rng = np.random.default_rng(5)
    samples = [rng.normal(0, 1, (int(length), 2)).astype(np.float32) for length in rng.integers(1, 30, 300)]
    write_parquet(tmp_path / "ragged.parquet", samples)
    score(
        tmp_path / "free.onnx", [tmp_path / "ragged.parquet"], tmp_path / "out", attention=True, batch_size=64
    )
    predictor = Predictor(tmp_path / "free.onnx")
    got_y = read_column(tmp_path / "out" / "ragged.parquet", "y")
    got_w = read_column(tmp_path / "out" / "ragged.parquet", "attention_weights")
    for sample, y, w in zip(samples, got_y, got_w):
        want_y, want_w = predictor.predict(sample[None], return_attention=True)
        np.testing.assert_allclose(y, want_y[0, 0], rtol=0, atol=1e-6)
        np.testing.assert_allclose(np.array(w, np.float32), want_w[0], rtol=0, atol=1e-6)


def test_a_bad_row_in_the_third_file_is_refused_by_name_before_anything_runs(tmp_path):
    rng = np.random.default_rng(1)
    for i in range(3):
        samples = list(rng.random((20, 10, 1), dtype=np.float32))
        if i == 2:
            samples[13] = samples[13][:9]  # one step short
        write_parquet(tmp_path / f"part-{i}.parquet", samples)
    result = run_cli("score", SEED, str(tmp_path / "part-*.parquet"), "-o", tmp_path / "out")
    assert result.returncode == 2
    assert result.stderr.splitlines()[0] == (
        f"error: {tmp_path / 'part-2.parquet'}: column 'x', row 13: not of shape (10, 1)"
    )
    assert not (tmp_path / "out").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"part-{i}.parquet" for i in range(3)]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda p: np.save(p / "d.npy", np.zeros((4, 9, 1), np.float32)),
            "an array of shape (4, 9, 1) does not fit",
        ),
        (lambda p: np.save(p / "d.npy", np.full((4, 10, 1), np.nan, np.float32)), "row 0 holds NaN"),
        (lambda p: write_parquet(p / "d.parquet", [np.zeros((10, 1))], column="z"), "no column 'x'"),
    ],
)
def test_bad_files_are_named(tmp_path, make, message):
    make(tmp_path)
    (data,) = tmp_path.iterdir()
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        score(SEED, [data], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_an_existing_output_folder_is_kept_without_force(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((3, 10, 1), np.float32))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(OutputExistsError):
        score(SEED, [tmp_path / "x.npy"], tmp_path / "out")
    result = run_cli("score", SEED, tmp_path / "x.npy", "-o", tmp_path / "out")
    assert result.returncode == 2 and "exists" in result.stderr
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"
