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

import glob
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgeattn import __version__, defaults
from edgeattn.errors import CheckFailedError, InputError, first_line, require
from edgeattn.files import check_writable_folder, sha256_of, staged_folder
from edgeattn.runtime import ATTENTION_OUTPUT, Predictor

SUFFIXES = (".npy", ".parquet")
FILE_COLUMN = "__edgeattn_file"
# What one data file may expand to in the driver's memory (its model columns, decoded), in MB.
MAX_DATA_MB_VARIABLE = "EDGEATTN_MAX_DATA_MB"
DEFAULT_MAX_DATA_MB = 4096
PYARROW_FIXED = (
    14,
    0,
    1,
)  # pyarrow 14.0.0 and older: CVE-2023-47248 (code execution reading untrusted parquet)


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


# -- the data files ---------------------------------------------------------------------------------------


def expand(patterns) -> list[Path]:
    """Files and globs, in the order given (a glob's matches sorted); every pattern must match a data file."""
    found: list[Path] = []
    for pattern in patterns:
        matches = sorted(glob.glob(str(pattern))) if glob.has_magic(str(pattern)) else [str(pattern)]
        if not matches:
            raise InputError(f"{pattern}: no file matches")
        for match in map(Path, matches):
            if not match.is_file():
                raise InputError(f"{match}: no such file")
            if match.suffix.lower() not in SUFFIXES:
                raise InputError(f"{match}: not a .npy or .parquet file")
            if match.resolve() not in {f.resolve() for f in found}:
                found.append(match)
    if not found:
        raise InputError("no data files given")
    return found


def max_data_mb() -> int:
    """The limit on what one data file may expand to in memory (``EDGEATTN_MAX_DATA_MB``, default 4096)."""
    text = os.environ.get(MAX_DATA_MB_VARIABLE, str(DEFAULT_MAX_DATA_MB))
    try:
        limit = int(text)
    except ValueError:
        limit = 0
    if limit < 1:
        raise InputError(f"{MAX_DATA_MB_VARIABLE} must be a whole number of MB >= 1, got {text!r}")
    return limit


def _check_size(path: Path, nbytes: int, rows: int) -> None:
    limit = max_data_mb()
    if nbytes > limit * 1024 * 1024:
        raise InputError(
            f"{path}: its model columns expand to {nbytes / 2**20:,.0f} MB in memory ({rows:,} rows), "
            f"over the limit of {limit} MB",
            hint=f"split the file, or raise {MAX_DATA_MB_VARIABLE} for a trusted one",
        )


def check_pyarrow(pa) -> None:
    """Refuse a pyarrow with CVE-2023-47248 (14.0.0 and older read untrusted parquet unsafely)."""
    try:
        version = tuple(int(part) for part in pa.__version__.split(".")[:3])
    except ValueError:
        return  # a development build: newer than any release with the bug
    if version < PYARROW_FIXED:
        raise InputError(
            f"pyarrow {pa.__version__} can run code from a crafted parquet file (CVE-2023-47248)",
            hint="pip install 'pyarrow>=14.0.1'",
        )


def check_file(path: Path, specs):
    """A data file that fits the model's inputs, read once: an arrow table of the input columns (a .npy array
    as nested lists, like parquet's); else InputError naming the file, the column and the first bad row.
    What the file expands to is bounded (``EDGEATTN_MAX_DATA_MB``) before it is read."""
    if path.suffix.lower() == ".npy":
        return _check_npy(path, specs)
    return _check_parquet(path, specs)


def _check_integers(where: str, values: np.ndarray, parents: np.ndarray, spec) -> None:
    """Values fed to an integer input: whole numbers within its type's range (never cast silently)."""
    if spec.dtype.kind not in "iu":
        return
    info = np.iinfo(spec.dtype)
    if values.dtype.kind == "f":
        bad = np.flatnonzero(values != np.floor(values))
        if bad.size:
            raise InputError(
                f"{where}, row {int(parents[bad[0]])}: holds {values[bad[0]].item()!r}, not a whole number; "
                f"input {spec.name!r} takes {spec.dtype} values (token ids)"
            )
    if values.size:
        bad = np.flatnonzero((values < info.min) | (values > info.max))
        if bad.size:
            raise InputError(
                f"{where}, row {int(parents[bad[0]])}: holds {values[bad[0]].item()!r}, outside the range of "
                f"input {spec.name!r} ({spec.dtype})"
            )


def _check_npy(path: Path, specs):
    import pyarrow as pa

    if len(specs) != 1:
        names = ", ".join(s.name for s in specs)
        raise InputError(f"{path}: a .npy file feeds one input; this model has {len(specs)} ({names})",
                         hint="give a .parquet file with one column per input")  # fmt: skip
    spec = specs[0]
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable .npy file ({exc})") from None
    if array.ndim != len(spec.shape) or any(
        isinstance(d, int) and array.shape[axis] != d for axis, d in enumerate(spec.shape) if axis > 0
    ):
        raise InputError(
            f"{path}: an array of shape {array.shape} does not fit input {spec.name!r} {_shape(spec.shape)}"
        )
    if array.dtype.kind not in "biuf":
        raise InputError(f"{path}: holds {array.dtype} values, not numbers")
    _check_size(path, int(array.nbytes) + 8 * int(np.prod(array.shape[:-1], dtype=np.int64)), len(array))
    if array.dtype.kind == "f":
        for start in range(0, array.shape[0], 65536):
            finite = np.isfinite(array[start : start + 65536]).reshape(min(65536, array.shape[0] - start), -1)
            bad = np.flatnonzero(~finite.all(axis=1))
            if bad.size:
                raise InputError(f"{path}: row {start + int(bad[0])} holds NaN or infinite values")
    if spec.dtype.kind in "iu" and array.dtype.kind in "fiu":
        for start in range(0, array.shape[0], 65536):
            chunk = np.asarray(array[start : start + 65536])
            per_row = int(np.prod(chunk.shape[1:], dtype=np.int64)) or 1
            rows = start + np.arange(chunk.size) // per_row
            _check_integers(f"{path}: input {spec.name!r}", chunk.reshape(-1), rows, spec)
    return pa.table({spec.name: _to_arrow_lists(np.asarray(array))})


def _check_parquet(path: Path, specs):
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    try:
        columns = pq.read_schema(path).names
        missing = [s.name for s in specs if s.name not in columns]
        if missing:
            raise InputError(
                f"{path}: no column {missing[0]!r} (the model's input); it has {', '.join(columns)}"
            )
        rows, nbytes = _expanded_size(pq.read_metadata(path), [s.name for s in specs])
        _check_size(path, nbytes, rows)
        table = pq.read_table(path, columns=[s.name for s in specs])
    except (OSError, pa.ArrowException) as exc:
        raise InputError(f"{path}: not a readable parquet file ({exc})") from None
    for spec in specs:
        column = table.column(spec.name).combine_chunks()
        where = f"{path}: column {spec.name!r}"
        if column.null_count:
            bad = int(np.flatnonzero(np.asarray(column.is_null()))[0])
            raise InputError(f"{where}, row {bad}: empty (null)")
        level, dims = column, list(spec.shape[1:])
        valid = np.ones(len(column), bool)
        parents = np.arange(len(column))  # for each element of this level: its row
        for axis, dim in enumerate(dims, start=1):
            if (
                not pa.types.is_list(level.type)
                and not pa.types.is_large_list(level.type)
                and not (pa.types.is_fixed_size_list(level.type))
            ):
                raise InputError(
                    f"{where}: rows hold {axis - 1}-level lists; input {spec.name!r} takes one sample of shape "
                    f"{_shape(spec.shape[1:])} per row"
                )
            lengths = np.asarray(pc.list_value_length(level).fill_null(0))
            wrong = parents[lengths != dim] if isinstance(dim, int) else parents[lengths < 1]
            valid[wrong] = False
            rows_of = parents
            parents = np.repeat(parents, lengths)
            level = level.flatten()
            if not isinstance(dim, int) and axis > 1:  # a free inner axis: one length within each row
                low = np.full(len(column), np.iinfo(np.int64).max)
                high = np.full(len(column), -1)
                np.minimum.at(low, rows_of, lengths)
                np.maximum.at(high, rows_of, lengths)
                valid &= (low == high) | (high < 0)
        if not valid.all():
            bad = int(np.flatnonzero(~valid)[0])
            raise InputError(f"{where}, row {bad}: not of shape {_shape(spec.shape[1:])}")
        if not (pa.types.is_integer(level.type) or pa.types.is_floating(level.type)):
            raise InputError(f"{where}: holds {level.type} values, not numbers")
        values = np.asarray(level.to_numpy(zero_copy_only=False))
        if pa.types.is_floating(level.type):
            bad = np.flatnonzero(~np.isfinite(values))
            if bad.size:
                raise InputError(f"{where}, row {int(parents[bad[0]])}: holds NaN or infinite values")
        _check_integers(where, values, parents, spec)
    return table


def _expanded_size(metadata, names: list[str]) -> tuple[int, int]:
    """Rows, and bytes that the named columns decode to, from a parquet file's footer (nothing decoded): per
    row group and leaf column, its values x their width, plus list offsets."""
    widths = {"BOOLEAN": 1, "INT32": 4, "FLOAT": 4, "INT64": 8, "DOUBLE": 8, "INT96": 12}
    nbytes = 0
    for group in range(metadata.num_row_groups):
        row_group = metadata.row_group(group)
        nbytes += 8 * row_group.num_rows
        for index in range(row_group.num_columns):
            chunk = row_group.column(index)
            if chunk.path_in_schema.split(".")[0] not in names:
                continue
            width = widths.get(chunk.physical_type, 0) or max(1, chunk.total_uncompressed_size // max(
                1, chunk.num_values))  # fmt: skip
            nbytes += chunk.num_values * (width + 4)  # the value, and its list offset
    return metadata.num_rows, nbytes


def _shape(shape) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ")"


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

    from edgeattn.sandbox import private_folder

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


def _groups(batch, specs):
    """The batch's rows as (row indices, feed) groups of equal shape: rows are grouped by the length of every
    free axis of every input (one group unless an axis is free)."""
    import pyarrow as pa

    n = batch.num_rows
    columns = {s.name: batch.column(s.name).combine_chunks() for s in specs}
    keys = [_free_lengths(columns[s.name], s) for s in specs]
    key = np.concatenate(keys, axis=1) if keys else np.zeros((n, 0), np.int64)
    if key.shape[1] == 0:
        key = np.zeros((n, 1), np.int64)
    shapes, inverse = np.unique(key, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    groups = []
    for group in range(len(shapes)):
        rows = np.flatnonzero(inverse == group)
        take = pa.array(rows) if len(rows) != n else None
        feed = {}
        for spec in specs:
            column = columns[spec.name] if take is None else columns[spec.name].take(take)
            feed[spec.name] = _to_numpy(column, len(rows), spec)
        groups.append((rows, feed))
    return groups


def _free_lengths(column, spec) -> np.ndarray:
    """(rows, free axes): each row's length along each free axis of ``spec`` (checked uniform per row)."""
    import pyarrow.compute as pc

    n = len(column)
    parents = np.arange(n)
    found = []
    level = column
    for dim in spec.shape[1:]:
        lengths = np.asarray(pc.list_value_length(level).fill_null(0))
        if not isinstance(dim, int):
            per_row = np.zeros(n, np.int64)
            per_row[parents] = lengths  # uniform within a row (check_file), so any element's length will do
            found.append(per_row)
        parents = np.repeat(parents, lengths)
        level = level.flatten()
    return np.stack(found, axis=1) if found else np.zeros((n, 0), np.int64)


def _to_numpy(column, n: int, spec) -> np.ndarray:
    level = column
    for _ in spec.shape[1:]:
        level = level.flatten()
    values = np.asarray(level.to_numpy(zero_copy_only=False), spec.dtype)
    return values.reshape(n, *_row_shape(column, spec))


def _row_shape(column, spec) -> list[int]:
    """The per-row shape of a nested-list column whose rows all have one shape."""
    import pyarrow.compute as pc

    dims, level = [], column
    for _ in spec.shape[1:]:
        dims.append(int(pc.list_value_length(level)[0].as_py()) if len(level) else 0)
        level = level.flatten()
    return dims


def _to_arrow(array: np.ndarray):
    """An output array (n, ...) as an arrow column: scalars for (n,) and (n, 1), nested lists otherwise."""
    import pyarrow as pa

    if array.ndim == 2 and array.shape[1] == 1:
        return pa.array(array.reshape(-1))
    return _to_arrow_lists(array)


def _to_arrow_lists(array: np.ndarray):
    """(n, ...) as nested lists, one per row."""
    import pyarrow as pa

    if array.ndim == 1:
        return pa.array(array)
    inner = _to_arrow_lists(array.reshape(-1, *array.shape[2:]))
    offsets = np.arange(0, array.shape[0] * array.shape[1] + 1, array.shape[1], dtype=np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), inner)


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

    from edgeattn.onnxfile import checked_copy
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
    from edgeattn.sandbox import private_folder

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
