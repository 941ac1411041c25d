"""`edgeattn score` on a real local Ray cluster (2 CPUs here): outputs equal the single-process Predictor's row
for row, bad data is refused by name before anything runs, nothing is replaced without --force."""

from __future__ import annotations

import json
import os

import keras
import numpy as np
import pytest
from conftest import MODELS, run_cli

from edgeattn.convert.export import ExportOptions, export
from edgeattn.core.errors import InputError, OutputExistsError
from edgeattn.runtime import Predictor

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
pytest.importorskip("ray")
from edgeattn.deploy.score import score  # noqa: E402

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


# -- issue 25: bounded reads, every input's length, whole token ids, the checked bytes on the workers --------


@pytest.fixture(scope="module")
def two_inputs(tmp_path_factory):
    """Token ids (time free) attending over float values (their own free time): T_q != T_k is allowed."""
    L = keras.layers
    tokens = L.Input((None,), dtype="int32", name="tokens")
    values = L.Input((None, 2), name="values")
    attended = L.Attention()([L.Embedding(20, 4)(tokens), L.Dense(4)(values)])
    model = keras.Model([tokens, values], L.Dense(1)(L.GlobalAveragePooling1D()(attended)))
    folder = tmp_path_factory.mktemp("two")
    model.save(folder / "two.keras")
    export(folder / "two.keras", folder / "two.onnx")
    return folder / "two.onnx"


def test_rows_are_grouped_by_the_length_of_every_input(two_inputs, tmp_path):
    rng = np.random.default_rng(2)
    rows = [
        (rng.integers(0, 20, 3), rng.normal(0, 1, (int(n), 2)).astype(np.float32)) for n in (2, 5, 2, 7, 5)
    ]
    rows += [(rng.integers(0, 20, 4), rng.normal(0, 1, (2, 2)).astype(np.float32))]
    pq.write_table(
        pa.table({"tokens": [t.tolist() for t, _ in rows], "values": [v.tolist() for _, v in rows]}),
        tmp_path / "pairs.parquet",
    )
    score(two_inputs, [tmp_path / "pairs.parquet"], tmp_path / "out", batch_size=64, workers=1)
    predictor = Predictor(two_inputs)
    got = read_column(tmp_path / "out" / "pairs.parquet", "y")
    for (tokens, values), y in zip(rows, got):
        want = predictor.predict({"tokens": tokens[None].astype(np.int32), "values": values[None]})
        np.testing.assert_allclose(y, want[0, 0], rtol=0, atol=1e-6)


def test_float_token_ids_are_refused_by_name_not_cast(two_inputs, tmp_path):
    values = [[[0.5, 0.5]] * 3] * 4
    tokens = [[1.0, 2.0, 3.0]] * 4
    tokens[2] = [1.0, 2.5, 3.0]  # 2.5 would become token 2
    pq.write_table(pa.table({"tokens": tokens, "values": values}), tmp_path / "floats.parquet")
    result = run_cli("score", two_inputs, tmp_path / "floats.parquet", "-o", tmp_path / "out")
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines()[0] == (
        f"error: {tmp_path / 'floats.parquet'}: column 'tokens', row 2: holds 2.5, not a whole number; "
        "input 'tokens' takes int32 values (token ids)"
    )
    assert not (tmp_path / "out").exists()
    tokens[2] = [1.0, 2.0, 2.0**40]  # whole, but past int32
    pq.write_table(pa.table({"tokens": tokens, "values": values}), tmp_path / "floats.parquet")
    with pytest.raises(
        InputError, match=r"row 2: holds 1099511627776.0, outside the range of input 'tokens'"
    ):
        score(two_inputs, [tmp_path / "floats.parquet"], tmp_path / "out")


def test_a_file_that_expands_past_the_limit_is_refused_before_it_is_read(tmp_path, monkeypatch):
    """30,000 rows of zeros: a few kB of parquet, 3.4 MB once read, over a 1 MB limit."""
    write_parquet(tmp_path / "zeros.parquet", np.zeros((30_000, 10, 1)))
    assert (tmp_path / "zeros.parquet").stat().st_size < 100_000
    np.save(tmp_path / "zeros.npy", np.zeros((30_000, 10, 1), np.float32))
    monkeypatch.setenv("EDGEATTN_MAX_DATA_MB", "1")
    read = pq.read_table
    monkeypatch.setattr(pq, "read_table", lambda *a, **k: pytest.fail("read before the size check"))
    for name in ("zeros.parquet", "zeros.npy"):
        with pytest.raises(InputError, match=rf"{name}: its model columns expand to [34] MB in memory "
                                             r"\(30,000 rows\), over the limit of 1 MB"):  # fmt: skip
            score(SEED, [tmp_path / name], tmp_path / "out")
    monkeypatch.setattr(pq, "read_table", read)
    result = run_cli("score", SEED, tmp_path / "zeros.parquet", "-o", tmp_path / "out")  # the env var is set
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: {tmp_path / 'zeros.parquet'}: its model columns expand to")
    assert "EDGEATTN_MAX_DATA_MB" in result.stderr
    assert not (tmp_path / "out").exists()


def test_pyarrow_with_cve_2023_47248_is_refused(tmp_path, monkeypatch):
    import tomllib

    from conftest import ROOT

    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["ray"]
    assert "pyarrow>=14.0.1" in extra
    np.save(tmp_path / "x.npy", np.zeros((3, 10, 1), np.float32))
    monkeypatch.setattr(pa, "__version__", "14.0.0")
    with pytest.raises(InputError, match=r"pyarrow 14\.0\.0 can run code from a crafted parquet file"):
        score(SEED, [tmp_path / "x.npy"], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_the_workers_score_the_bytes_the_driver_checked(seed_onnx_plain, tmp_path):
    """The model file is replaced after the driver's checks, before Ray starts: the workers (which on a real
    cluster would open their own copy of that path) still score the checked model."""
    import shutil

    model = tmp_path / "model.onnx"
    shutil.copy(SEED, model)
    x = np.random.default_rng(4).random((50, 10, 1), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    want = Predictor(SEED).predict(x)[:, 0]
    other = Predictor(seed_onnx_plain).predict(x)[:, 0]
    assert np.max(np.abs(want - other)) > 1e-3  # the two models differ

    def swap(stage: str) -> None:
        if stage.startswith("starting Ray"):
            shutil.copy(seed_onnx_plain, model)

    result = score(model, [tmp_path / "x.npy"], tmp_path / "out", workers=1, progress=swap)
    np.testing.assert_array_equal(np.asarray(pq.read_table(tmp_path / "out" / "x.parquet").column("y")), want)
    from edgeattn.core.files import sha256_of

    assert result.manifest["model_sha256"] == sha256_of(SEED)


def test_a_worker_refuses_bytes_that_are_not_the_checked_ones():
    import hashlib

    from edgeattn.deploy.score import ScoreFailedError, _worker_predictor

    data = SEED.read_bytes()
    shipped = {
        "name": "seed.onnx",
        "path": "seed.onnx",
        "sha256": {"seed.onnx": hashlib.sha256(data).hexdigest()},
    }
    assert _worker_predictor({**shipped, "bytes": data}).outputs[0].name == "y"
    with pytest.raises(ScoreFailedError, match="differ from the checked ones"):
        _worker_predictor({**shipped, "bytes": data[:-1] + bytes([data[-1] ^ 1])})


@pytest.mark.parametrize("address", [None, "ray://head:10001"])
def test_ray_starts_from_a_private_empty_folder(tmp_path, monkeypatch, address):
    """Ray puts the driver's working folder first on its workers' sys.path: the driver is in a private empty
    folder while Ray starts, and a joined cluster gets that folder as the job's working_dir (so Ray adds no
    driver folder at all). Joining a real cluster from a planted folder was checked by hand (README)."""
    import types

    from edgeattn.deploy import score as score_module

    seen = {}

    def init(address=None, **kwargs):
        seen.update(cwd=os.getcwd(), listing=os.listdir("."), kwargs=kwargs)

    context = types.SimpleNamespace(execution_options=types.SimpleNamespace(), enable_progress_bars=False)
    data = types.SimpleNamespace(DataContext=types.SimpleNamespace(get_current=lambda: context))
    fake = types.SimpleNamespace(init=init, data=data)
    monkeypatch.chdir(tmp_path)
    from edgeattn.core.sandbox import private_folder

    with private_folder("edgeattn-score-") as folder:
        score_module._init_ray(fake, address, 1, folder)
    assert seen["cwd"] == os.path.realpath(folder) != os.getcwd() == str(tmp_path)
    assert seen["listing"] == [] and not os.path.exists(folder)
    assert seen["kwargs"].get("runtime_env") == ({"working_dir": folder} if address else None)
