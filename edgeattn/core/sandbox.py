"""Containment: untrusted files are first parsed in a child process with a time and a memory limit.

A crafted HDF5, zip or ONNX file can crash (segfault), hang or exhaust the memory of the C libraries that read
it (h5py/HDF5, protobuf, onnxruntime). edgeattn parses each model file once in a child process: the whole
``.h5`` (config and every dataset, also the weights file inside a ``.keras`` zip) or the whole ONNX graph
(``onnx.load``, the external-data check, an onnxruntime session). Only when the child finished cleanly does the
CLI's own process touch the file; a crash, hang or memory blow-up in the child becomes one clear error.

The limits: ``EDGEATTN_PARSE_TIMEOUT`` seconds (default 120) and ``EDGEATTN_PARSE_MEMORY_MB`` of address
space (default 8192). ``EDGEATTN_CONTAIN=0`` parses in-process instead (trusted files, a little faster).
The child's side is ``edgeattn.convert.sandbox_child``, which nothing imports.

Every child process edgeattn starts (this one, bench's TensorFlow child) is started by ``child_command``:
isolated (``python -I``: no working folder or script folder on ``sys.path``, no ``PYTHON*`` variables, no user
site), given the parent's own import path explicitly (less any entry that is the working folder), and run in a
private empty folder (``private_folder``) with every path it gets made absolute. A ``json.py``,
``numpy.py`` or ``sitecustomize.py`` in the user's working folder or beside a model never runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator

from edgeattn.core import errors

READERS = {"model": "HDF5/zip", "onnx": "ONNX/onnxruntime", "savedmodel": "SavedModel protobuf"}


# Run in the isolated child before anything else: the import path handed over by the parent, then the module
# as ``__main__`` (its remaining arguments as ``sys.argv[1:]``).
_BOOT = (
    "import sys, json, runpy; sys.path[:] = json.loads(sys.argv[1]); module = sys.argv[2]; "
    "del sys.argv[1:3]; runpy.run_module(module, run_name='__main__', alter_sys=True)"
)


def import_path() -> list[str]:
    """The parent's ``sys.path`` for a child: absolute entries only, none that is the working folder (or
    empty, which means it), and the folder that holds this ``edgeattn`` package at the end."""
    here = os.path.realpath(os.getcwd())
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = []
    for entry in sys.path:
        if not entry or not os.path.isabs(entry) or os.path.realpath(entry) == here:
            continue
        if entry not in path:
            path.append(entry)
    if package_parent not in path and os.path.realpath(package_parent) != here:
        path.append(package_parent)
    return path


def child_command(module: str, *args: str) -> list[str]:
    """The command line that runs ``module`` (an ``edgeattn`` module) as ``__main__`` in an isolated
    interpreter. Start it with ``cwd=`` a ``private_folder()`` and absolute paths in ``args``."""
    return [sys.executable, "-I", "-c", _BOOT, json.dumps(import_path()), module, *args]


def child_env(**extra: str) -> dict[str, str]:
    """The environment for a child: the parent's (``-I`` ignores its ``PYTHON*`` variables), plus ``extra``."""
    return {**os.environ, **extra}


@contextlib.contextmanager
def private_folder(prefix: str = "edgeattn-child-") -> Iterator[str]:
    """A new empty folder only this user can enter, removed afterwards (also on error)."""
    folder = tempfile.mkdtemp(prefix=prefix)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def enabled() -> bool:
    return os.environ.get("EDGEATTN_CONTAIN", "1") != "0"


def _limits() -> tuple[float, int]:
    try:
        timeout = float(os.environ.get("EDGEATTN_PARSE_TIMEOUT", "120"))
        memory_mb = int(os.environ.get("EDGEATTN_PARSE_MEMORY_MB", "8192"))
    except ValueError:
        raise errors.InputError(
            "EDGEATTN_PARSE_TIMEOUT must be seconds and EDGEATTN_PARSE_MEMORY_MB a whole number"
        ) from None
    return timeout, memory_mb


def parse(kind: str, path: str | os.PathLike, shown: str | os.PathLike | None = None) -> dict:
    """Parse ``path`` as ``kind`` ("model" or "onnx") in a contained child process; returns its reply.

    Raises the ``EdgeAttnError`` kind the child raised, or ``InputError`` when it crashed, hung or ran out of
    memory. Messages name ``shown`` (the user's file, when ``path`` is a private copy of it).
    """
    read = os.path.abspath(os.fspath(path))  # the child runs in a private folder
    path = os.fspath(shown or path)
    timeout, memory_mb = _limits()

    def limit() -> None:  # runs in the child, before it starts Python
        import resource

        size = memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (size, size))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    env = child_env(TF_CPP_MIN_LOG_LEVEL="3", OMP_NUM_THREADS="1")
    cmd = child_command("edgeattn.convert.sandbox_child", kind, read)
    try:
        # The memory limit needs POSIX rlimits; elsewhere the child runs with the time limit only.
        preexec = limit if os.name == "posix" else None
        with private_folder("edgeattn-parse-") as cwd:
            done = subprocess.run(
                cmd, capture_output=True, timeout=timeout, preexec_fn=preexec, env=env, cwd=cwd
            )
    except subprocess.TimeoutExpired:
        raise errors.InputError(
            f"{path}: reading it did not finish within {timeout:g} s (the {READERS[kind]} reader hung)",
            hint="a crafted file can hang a reader; for a huge trusted file raise EDGEATTN_PARSE_TIMEOUT",
        ) from None
    if done.returncode < 0:
        name = signal.Signals(-done.returncode).name
        raise errors.InputError(
            f"{path} crashed the {READERS[kind]} reader ({name}): the file is malformed or crafted",
            hint="the crash was contained in a child process; nothing was written",
        )
    lines = done.stdout.decode("utf-8", "replace").strip().splitlines()
    try:
        reply = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        tail = done.stderr.decode("utf-8", "replace").strip().splitlines()
        cause = tail[-1] if tail else f"exit status {done.returncode}"
        if "MemoryError" in cause or "bad_alloc" in cause:
            cause = f"it needs more than {memory_mb} MB (EDGEATTN_PARSE_MEMORY_MB)"
        raise errors.InputError(f"{path}: the {READERS[kind]} reader failed: {cause}") from None
    if reply.get("memory"):
        raise errors.InputError(
            f"{path}: reading it needs more than {memory_mb} MB (EDGEATTN_PARSE_MEMORY_MB)",
            hint="raise EDGEATTN_PARSE_MEMORY_MB for a trusted file; the limit guards against crafted ones",
        )
    if "error" in reply:
        raise errors.from_reply({**reply, "error": reply["error"].replace(read, path)}, errors.InputError)
    return reply
