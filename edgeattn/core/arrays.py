"""Arrays in and out of files for the CLI: .npy, .npz, .csv and JSON (numpy only).

Inputs: ``.npy``; ``.npz`` (one array, or one per model input named after it); ``.csv`` (one sample per row,
reshaped to the model's fixed per-sample shape); ``-`` for JSON on stdin (nested lists, or an object of them
keyed by input name). Outputs by suffix: ``.npz``, ``.npy``, ``.csv`` or ``.json`` (``encode_outputs``).
"""

from __future__ import annotations

import io
import json
import re
import sys
import zipfile
from pathlib import Path

import numpy as np

from edgeattn.core.errors import InputError, require_file


def read_input(path: Path, specs=()):
    """An array, or a dict of arrays for several inputs. ``specs``: the model's inputs (for .csv shapes)."""
    if str(path) == "-":
        return _from_json(sys.stdin.read(), "stdin")
    require_file(path, "an input file")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _from_csv(path, specs)
    if suffix == ".json":
        return _from_json(path.read_text(), str(path))
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise InputError(f"{path}: not a readable .npy/.npz file ({exc})") from None
    if isinstance(loaded, np.ndarray):
        return loaded
    with loaded:
        arrays = {k: loaded[k] for k in loaded.files}
    if not arrays:
        raise InputError(f"{path} holds no arrays")
    return next(iter(arrays.values())) if len(arrays) == 1 else arrays


def _from_json(text: str, where: str):
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{where}: not valid JSON ({exc})") from None
    if isinstance(data, dict):
        return {k: np.asarray(v) for k, v in data.items()}
    if not isinstance(data, list):
        raise InputError(f"{where}: expected a list of samples (or an object of them by input name)")
    return data


def _from_csv(path: Path, specs) -> np.ndarray:
    if len(specs) != 1:
        raise InputError(f"{path}: a CSV input needs a model with one input")
    per_sample = specs[0].shape[1:]
    if not all(isinstance(d, int) for d in per_sample):
        raise InputError(f"{path}: CSV rows cannot be shaped for a free axis {specs[0].shape}; use .npy")
    try:
        rows = np.loadtxt(path, delimiter=",", ndmin=2, dtype=np.float64)
    except ValueError as exc:
        raise InputError(f"{path}: not a numeric CSV ({exc})") from None
    size = int(np.prod(per_sample))
    if rows.shape[1] != size:
        raise InputError(
            f"{path}: rows have {rows.shape[1]} values; the model takes {size} per sample {per_sample}"
        )
    return rows.reshape((rows.shape[0], *per_sample))


def encode_outputs(path: Path, outputs: dict[str, np.ndarray]) -> dict[Path, tuple[bytes, list[str]]]:
    """The files to write for ``outputs`` (by name, in the model's order) at ``path``, by its suffix:
    ``{file: (bytes, the output names it holds)}``.

    ``.npz`` holds one array per output, named after it; ``.json`` one object, an entry per output name; ``.npy``
    and ``.csv`` hold one array each: the first output goes to ``path``, each further output to a file beside it
    (``y.attention_weights.npy``). An output name that is not a plain file-name part (a model's names are its
    author's choice: ``../x``, ``a/b``) is written as ``output<N>`` (its position) in file names and .npz keys.
    """
    suffix = path.suffix.lower()
    if suffix not in (".npy", ".csv", ".json", ".npz"):
        raise InputError(f"{path}: the output must end in .npz, .npy, .csv or .json")
    names = list(outputs)
    if suffix == ".json":
        data = {name: array.tolist() for name, array in outputs.items()}
        return {path: ((json.dumps(data) + "\n").encode(), names)}
    keys = {name: _file_part(name, i) for i, name in enumerate(names)}
    if len(set(keys.values())) != len(keys):
        raise InputError(f"{path}: the output names {names} do not give distinct file names; use .json")
    buf = io.BytesIO()
    if suffix == ".npz":
        # one .npy member per output, written here: np.savez's keyword names would clash with outputs
        # named like its own parameters ("file", "allow_pickle")
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            for name, array in outputs.items():
                member = io.BytesIO()
                np.lib.format.write_array(member, np.asarray(array), allow_pickle=False)
                zf.writestr(f"{keys[name]}.npy", member.getvalue())
        return {path: (buf.getvalue(), names)}
    files = {}
    for i, (name, array) in enumerate(outputs.items()):
        target = path if i == 0 else path.with_name(f"{path.stem}.{keys[name]}{suffix}")
        buf = io.BytesIO()
        if suffix == ".npy":
            np.save(buf, array, allow_pickle=False)
        else:
            np.savetxt(buf, array.reshape(array.shape[0], -1), delimiter=",", fmt="%.9g")
        files[target] = (buf.getvalue(), [name])
    return files


def _file_part(name: str, index: int) -> str:
    """``name`` if it is safe inside a file name (letters, digits, ``_ . -``, not starting with a dot), else
    ``output<index>``."""
    return name if re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}", name) else f"output{index}"
