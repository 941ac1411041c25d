"""``edgeattn score``: score whole data sets on Ray Data, a local cluster on this machine by default, an existing
cluster when given its address.

DATA is ``.npy`` files (one array of shape (n, *input shape), single-input models) or ``.parquet`` files (one
column per model input, named like it, one sample per row as nested lists; rows may differ in length along a
free time axis). Every file is checked against the model's input spec before anything runs; the file, the
column and the first bad row are named. Each Ray worker is an actor that holds one ``Predictor`` (one thread),
so the model is loaded once per worker. OUT_DIR gets one parquet file per input file, rows in input order,
with a column per model output (``y``; ``attention_weights`` with ``attention``) and ``manifest.json``. It is
written into a temporary folder and renamed into place at the end: a failed or killed run leaves no half data
set. Needs the ``[ray]`` extra (Ray Data and pyarrow).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgeattn import __version__
from edgeattn.core import defaults
from edgeattn.core.errors import CheckFailedError, InputError, first_line, require
from edgeattn.core.files import check_writable_folder, sha256_of, staged_folder

# The data files' side (edgeattn.deploy.scoredata), used here.
from edgeattn.deploy.scoredata import (
    _groups,
    _to_arrow,
    check_file,
    check_pyarrow,
    expand,
)
from edgeattn.runtime import ATTENTION_OUTPUT, Predictor

FILE_COLUMN = "__edgeattn_file"


class ScoreFailedError(CheckFailedError):
    """The run failed on Ray after the data were checked (exit 1); nothing was written."""


@dataclass(frozen=True)
class DataFile:
    path: Path
    rows: int
    output: str  # the output file's name in OUT_DIR


@dataclass
class ScoreResult:
    out_dir: Path
    files: list[DataFile]
    workers: int
    address: str
    rows: int
    seconds: float  # the scoring itself, after Ray started
    startup_seconds: float  # ray.init
    manifest: dict = field(default_factory=dict)

    @property
    def samples_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else float("inf")


# -- the workers ------------------------------------------------------------------------------------------


class Scorer:
    """One Ray actor: a Predictor (1 thread), loaded once, scoring pyarrow batches in order.

    The worker gets the model's bytes, the very bytes the driver checked (a worker on another machine never
    opens a path of its own), and checks their sha256 before loading them. A model with external data is
    opened by path where the driver found it, after the sha256 of the file and of each external data file
    matched what the driver recorded.
    """

    def __init__(self, model: dict, attention: bool) -> None:
        self.predictor = _worker_predictor(model)
        self.names = [o.name for o in self.predictor.outputs if attention or o.name != ATTENTION_OUTPUT]

    def __call__(self, batch):
        import pyarrow as pa

        groups = _groups(batch, self.predictor.inputs)
        parts: dict[str, list] = {name: [] for name in self.names}
        order = []
        for rows, feed in groups:
            outputs = dict(zip([o.name for o in self.predictor.outputs], self.predictor.run(feed)))
            for name in self.names:
                parts[name].append(_to_arrow(outputs[name]))
            order.append(rows)
        inverse = np.argsort(np.concatenate(order), kind="stable")
        columns = {name: pa.concat_arrays(arrays).take(pa.array(inverse)) for name, arrays in parts.items()}
        columns[FILE_COLUMN] = batch.column(FILE_COLUMN)
        return pa.table(columns)


def _worker_predictor(model: dict) -> Predictor:
    """The worker's Predictor on the model the driver shipped (see ``Scorer``)."""
    import hashlib

    from edgeattn.core.sandbox import private_folder

    if model.get("bytes") is None:
        for path, digest in model["sha256"].items():
            if sha256_of(path) != digest:
                raise ScoreFailedError(
                    f"{path} on this worker is not the file the driver checked (sha256 differs)"
                )
        return Predictor(model["path"], threads=1)
    data = model["bytes"]
    if hashlib.sha256(data).hexdigest() != model["sha256"][model["path"]]:
        raise ScoreFailedError(
            f"{model['name']}: the bytes that reached the worker differ from the checked ones"
        )
    with private_folder("edgeattn-scorer-") as folder:
        path = os.path.join(folder, model["name"])
        with open(path, "xb") as fh:
            fh.write(data)
        return Predictor(path, threads=1)


# -- the run ----------------------------------------------------------------------------------------------


def score(
    model: str | os.PathLike,
    data,
    out_dir: str | os.PathLike,
    attention: bool = False,
    batch_size: int = defaults.SCORE_BATCH_SIZE,
    workers: int | None = None,
    address: str | None = None,
    force: bool = False,
    progress: Callable[[str], None] | None = None,
) -> ScoreResult:
    """Score every data file with ``model`` on Ray; see the module docstring."""
    say = progress or (lambda _stage: None)
    require("ray", "ray")
    check_pyarrow(require("pyarrow", "ray"))
    import hashlib

    import onnx

    from edgeattn.graphs.onnxfile import checked_copy
    from edgeattn.runtime import external_locations

    model = Path(model)
    # read once: the contained child parses a private copy of these bytes, the driver's Predictor is built from
    # that copy, and the workers get these bytes (or, with external data, check the sha256 recorded here)
    with checked_copy(model) as (copy, model_bytes):
        digest = hashlib.sha256(model_bytes).hexdigest()
        proto = onnx.ModelProto.FromString(model_bytes)
        predictor = Predictor(copy)
    shipped = _shipped_model(model, digest, external_locations(proto), model_bytes)
    if attention and not predictor.has_attention:
        raise InputError(
            f"{model} has no attention_weights output", hint="export it with --attention-weights"
        )
    out_dir = check_writable_folder(out_dir, force)
    if batch_size < 1:
        raise InputError(f"--batch-size must be >= 1, got {batch_size}")
    paths = expand(data)
    say(f"checking {len(paths)} file(s) against the model's inputs")
    tables = [check_file(p, predictor.inputs) for p in paths]
    files = _name_outputs(paths, [t.num_rows for t in tables])

    import ray

    say("starting Ray" + (f" (joining {address})" if address else " (a local cluster)"))
    from edgeattn.core.sandbox import private_folder

    with private_folder("edgeattn-score-") as folder:
        return _score_on_ray(ray, shipped, predictor, files, tables, out_dir, attention, batch_size, workers,
                             address, force, folder, say)  # fmt: skip


def _shipped_model(model: Path, digest: str, locations: list[str], data: bytes) -> dict:
    """What the workers get: the checked bytes, or for a model with external data its absolute path and the
    sha256 of each file it reads (the model's own: that of the checked bytes)."""
    if not locations:
        return {"name": model.name, "path": model.name, "sha256": {model.name: digest}, "bytes": data}
    folder = model.resolve().parent
    sums = {str(model.resolve()): digest} | {str(folder / loc): sha256_of(folder / loc) for loc in locations}
    return {"name": model.name, "path": str(model.resolve()), "sha256": sums}


def _score_on_ray(
    ray,
    shipped,
    predictor,
    files,
    tables,
    out_dir,
    attention,
    batch_size,
    workers,
    address,
    force,
    folder,
    say,
) -> ScoreResult:
    total = sum(f.rows for f in files)
    start = time.perf_counter()
    _init_ray(ray, address, workers, folder)
    startup = time.perf_counter() - start
    try:
        workers = workers or max(1, int(ray.cluster_resources().get("CPU", 1)) - (0 if address else 1))
        with staged_folder(out_dir, force) as tmp:
            start = time.perf_counter()
            try:
                _run(ray, shipped, files, tables, attention, batch_size, workers, tmp, say)
            except ray.exceptions.RayError as exc:
                raise ScoreFailedError(
                    f"scoring failed on Ray: {first_line(exc)}", hint="--debug shows the traceback"
                ) from exc
            seconds = time.perf_counter() - start
            manifest = {
                "edgeattn_version": __version__,
                "ray_version": ray.__version__,
                "model": shipped["name"],
                "model_sha256": shipped["sha256"][shipped["path"]],
                "inputs": [{"file": str(f.path), "rows": f.rows} for f in files],
                "outputs": [{"file": f.output, "rows": f.rows} for f in files],
                "columns": [o.name for o in predictor.outputs if attention or o.name != ATTENTION_OUTPUT],
                "rows": total,
                "workers": workers,
                "address": address or "local",
                "batch_size": batch_size,
                "seconds": round(seconds, 3),
                "ray_start_seconds": round(startup, 3),
                "samples_per_s": round(total / seconds, 1) if seconds > 0 else None,
            }
            (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    finally:
        ray.shutdown()
    return ScoreResult(out_dir, files, workers, address or "local", total, seconds, startup, manifest)


def _name_outputs(paths: list[Path], rows: list[int]) -> list[DataFile]:
    names: dict[str, int] = {}
    files = []
    for path, n in zip(paths, rows):
        stem = path.stem
        names[stem] = names.get(stem, 0) + 1
        name = f"{stem}.parquet" if names[stem] == 1 else f"{stem}-{names[stem]}.parquet"
        files.append(DataFile(path, n, name))
    return files


def _init_ray(ray, address: str | None, workers: int | None, folder: str) -> None:
    """Start or join Ray from ``folder`` (private, empty), never from the user's working folder.

    Ray puts the driver's working folder first on every worker's ``sys.path`` (unless the job has a
    ``working_dir``), so a ``numpy.py`` there would run in the workers. The driver is in ``folder`` while Ray
    starts: a local cluster's processes start there and its workers get only that empty folder on their path.
    Joining a cluster (``address``), the job's ``working_dir`` is ``folder``: Ray then adds no driver folder to
    the workers' path, and they start in their copy of the empty folder.
    """
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    kwargs = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.ERROR}
    if address:
        kwargs = {"log_to_driver": False, "logging_level": logging.ERROR}
    else:  # the workers, plus one CPU for reading the files
        kwargs["num_cpus"] = max(os.cpu_count() or 1, workers or 0) + 1
    if address:  # a local cluster's workers start in ``folder`` anyway; a working_dir costs them ~2 s here
        kwargs["runtime_env"] = {"working_dir": folder}
    here = os.getcwd()
    try:
        os.chdir(folder)  # the processes a local cluster starts inherit it
        ray.init(address=address, **kwargs)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise InputError(f"cannot start or join Ray at {address or 'a local cluster'}: {exc}") from None
    finally:
        os.chdir(here)
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    context.enable_progress_bars = sys.stderr.isatty()
    if not sys.stderr.isatty():  # in pipes and logs: no progress lines
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        logging.getLogger("ray").setLevel(logging.ERROR)


def _run(ray, model: dict, files, tables, attention, batch_size, workers, tmp: Path, say) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    # The driver has read and checked every file; Ray gets those tables, sliced into blocks that the workers
    # share (Ray's own file listing costs seconds per file and reads nothing we have not read already).
    blocks = []
    for index, table in enumerate(tables):
        table = table.append_column(FILE_COLUMN, pa.array(np.full(table.num_rows, index, np.int32)))
        step = 4 * batch_size
        blocks += [table.slice(offset, step) for offset in range(0, table.num_rows, step)]
    ds = ray.data.from_arrow(blocks)
    scored = ds.map_batches(  # Ray restarts a worker that dies and retries its batches
        Scorer,
        fn_constructor_kwargs={"model": model, "attention": attention},
        batch_size=batch_size,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=workers),
        num_cpus=1,
    )
    say(f"scoring {sum(f.rows for f in files):,} rows on {workers} worker(s)")
    writers: dict[int, pq.ParquetWriter] = {}
    try:
        for batch in scored.iter_batches(batch_format="pyarrow", batch_size=None):
            index_column = np.asarray(batch.column(FILE_COLUMN))
            for index in np.unique(index_column):
                part = batch.filter(pa.array(index_column == index)).drop_columns([FILE_COLUMN])
                if index not in writers:
                    writers[index] = pq.ParquetWriter(tmp / files[index].output, part.schema)
                writers[index].write_table(part)
    finally:
        for writer in writers.values():
            writer.close()
    for index, f in enumerate(files):  # a file with no rows still gets its (empty) output
        if index not in writers and f.rows == 0:
            (tmp / f.output).touch()
