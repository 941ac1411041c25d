"""The data files of ``edgeattn score``: found, checked against the model's inputs, read, and converted.

- ``expand``: the files and globs given, in order; each must match a ``.npy`` or ``.parquet`` file.
- ``check_file``: one file checked against the model's input spec and read once, as an arrow table of the input
  columns (a ``.npy`` array as nested lists, like parquet's); the file, the column and the first bad row are
  named. What a file expands to in memory is bounded (``EDGEATTN_MAX_DATA_MB``, ``max_data_mb``) before it is
  read: from the parquet footer or the ``.npy`` header.
- ``check_pyarrow``: refuse a pyarrow with CVE-2023-47248.
- ``_groups``, ``_to_arrow``: on the workers, a batch's rows as numpy feeds grouped by shape, and the outputs
  back as arrow columns.

The Ray side (the driver, the workers, the output folder) is ``edgeattn.deploy.score``.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

import numpy as np

from edgeattn.core.errors import InputError

SUFFIXES = (".npy", ".parquet")
# What one data file may expand to in the driver's memory (its model columns, decoded), in MB.
MAX_DATA_MB_VARIABLE = "EDGEATTN_MAX_DATA_MB"
DEFAULT_MAX_DATA_MB = 4096
PYARROW_FIXED = (
    14,
    0,
    1,
)  # pyarrow 14.0.0 and older: CVE-2023-47248 (code execution reading untrusted parquet)


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


# -- on the workers: feeds from a batch, arrow columns from the outputs -----------------------------------


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
