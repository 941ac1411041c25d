"""Atomic output files: prepared in memory, written to a temporary file beside the target, renamed into place.

An existing file is replaced only with ``force``; a failed or killed write never leaves a partial file under
the target's name, and temporary files left by a killed run are removed by the next write to the same target.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path

from edgeattn.core.errors import InputError, OutputExistsError, check_size

TMP_MARK = ".edgeattn-tmp-"
# Tests only: seconds to pause while a temporary file or folder is half written, so that a test can kill the
# process at that moment and see what is left.
PAUSE_ENV = "EDGEATTN_TEST_PAUSE_WRITE"


def check_writable(path: str | os.PathLike, force: bool) -> Path:
    """Fail early (before any slow work) when ``path`` cannot be written."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path} is a directory; give a file name")
    if path.exists() and not force:
        raise OutputExistsError(f"{path} exists", hint="pass --force to replace it")
    _check_folder(path)
    return path


def _check_folder(path: Path) -> None:
    """The folder that will hold ``path`` exists and takes a new file."""
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise InputError(f"{folder}: no such folder")
    probe = _temp_name(path)
    try:  # os.access is not enough: root passes it on read-only mounts
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
        probe.unlink()
    except OSError as exc:
        raise InputError(f"{folder}: the folder is not writable ({exc.strerror})") from None


def _pause(tmp: Path, fh=None) -> None:
    import sys
    import time

    if fh is not None:
        fh.flush()
    print(f"edgeattn: paused writing {tmp}", file=sys.stderr, flush=True)
    time.sleep(float(os.environ[PAUSE_ENV]))


def _temp_name(path: Path, kind: str = "") -> Path:
    """A fresh temporary name beside ``path``: ``.NAME.edgeattn-tmp-[KIND]PID-RANDOM``. The process id lets a
    later run remove what a dead one left; the random part makes the name unpredictable (no one can plant a
    link there in advance, and the file is created with O_EXCL|O_NOFOLLOW anyway)."""
    import secrets

    parent = path.parent if str(path.parent) else Path(".")
    return parent / f".{path.name}{TMP_MARK}{kind}{os.getpid()}-{secrets.token_hex(8)}"


def _clean_stale(path: Path) -> None:
    """Remove the temporary files and folders that dead runs left beside ``path``."""
    import shutil

    for tmp in path.parent.glob(f".{path.name}{TMP_MARK}*"):
        pid = tmp.name.split(TMP_MARK, 1)[-1].removeprefix("old-").split("-")[0]
        if pid.isdigit() and not _alive(int(pid)):
            if tmp.is_dir():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    tmp.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def write_atomic(path: str | os.PathLike, data: bytes, force: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically. Raises ``OutputExistsError`` if it exists and not ``force``."""
    path = check_writable(path, force)
    _clean_stale(path)
    tmp = _temp_name(path)
    try:
        # a new file of our own, never one that exists or a link planted at the name
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
        with os.fdopen(os.open(tmp, flags, 0o666), "wb") as fh:
            if os.environ.get(PAUSE_ENV):  # tests only: half the bytes, then a pause to be killed in
                fh.write(data[: len(data) // 2])
                _pause(tmp, fh)
                data = data[len(data) // 2 :]
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if force:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # fails if the target appeared meanwhile: never replace without force
            except FileExistsError:
                raise OutputExistsError(f"{path} exists", hint="pass --force to replace it") from None
            except OSError:  # file systems without hard links
                if path.exists():
                    raise OutputExistsError(f"{path} exists", hint="pass --force to replace it") from None
                os.replace(tmp, path)
    except PermissionError as exc:
        raise InputError(f"cannot write {path}: {exc.strerror}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    with contextlib.suppress(OSError):
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return path


@contextlib.contextmanager
def staged_folder(path: str | os.PathLike, force: bool = False):
    """Build a folder atomically: yields a temporary folder beside ``path`` to fill; when the block ends without
    an error it is renamed into place (an existing folder, replaced only with ``force``, is moved aside and then
    removed). A failed or killed run leaves either the old folder or the new one, never a half; the next run
    removes temporary folders that dead runs left."""
    import shutil

    path = check_writable_folder(path, force)
    _clean_stale(path)
    tmp = _temp_name(path)
    old = _temp_name(path, "old-")
    try:
        tmp.mkdir()
        yield tmp
        if os.environ.get(PAUSE_ENV):
            _pause(tmp)
        if path.exists():
            if not force:
                raise OutputExistsError(f"{path} exists", hint="pass --force to replace it")
            os.replace(path, old)
        os.replace(tmp, path)
    except PermissionError as exc:
        raise InputError(f"cannot write {path}: {exc.strerror}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def check_writable_folder(path: str | os.PathLike, force: bool) -> Path:
    """Fail early (before any slow work) when the folder ``path`` cannot be written."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"{path} exists and is not a folder")
    if path.exists() and not force:
        raise OutputExistsError(f"{path} exists", hint="pass --force to replace it")
    _check_folder(path)
    return path


def write_folder_atomic(path: str | os.PathLike, files: dict[str, bytes | Path], force: bool = False) -> Path:
    """Write a folder of files (relative name -> bytes, or a file to copy) atomically (see ``staged_folder``)."""
    import shutil

    with staged_folder(path, force) as tmp:
        for name, content in files.items():
            target = tmp / name
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, Path):
                shutil.copyfile(content, target)
            else:
                target.write_bytes(content)
    return Path(path)


def sha256_of(path: str | os.PathLike) -> str:
    """The sha256 of a file; of a folder (a SavedModel), over each file's relative name and sha256, in order."""
    digest = hashlib.sha256()
    if Path(path).is_dir():
        for name, file in _folder_files(Path(path)):
            digest.update(f"{name}\0{sha256_of(file)}\n".encode())
        return digest.hexdigest()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _folder_files(folder: Path) -> list[tuple[str, Path]]:
    """(relative name, path) of every file below ``folder``, sorted; a symbolic link is refused (it could
    lead out of the folder), so is anything but regular files and folders, and a total over the size limit."""
    import stat

    found = []
    total = 0
    for root, dirs, names in os.walk(folder):
        for name in sorted(dirs + names):
            item = Path(root) / name
            if item.is_symlink():
                raise InputError(f"{item} is a symbolic link: a model folder must hold its own files")
            info = item.stat()
            if not (stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode)):
                raise InputError(f"{item} is not a regular file (a device, a FIFO or a socket)")
            total += info.st_size if stat.S_ISREG(info.st_mode) else 0
        found += [(str((Path(root) / n).relative_to(folder)), Path(root) / n) for n in names]
    check_size(folder, total)
    return sorted(found)


def _copy_regular(source: Path, target: Path, follow: bool = True) -> None:
    """Copy a file that is regular when opened and within the size limit (both checked on the open descriptor:
    no race with a swap to a device); without ``follow``, a link at ``source`` is refused."""
    import shutil
    import stat

    flags = os.O_RDONLY | (0 if follow else os.O_NOFOLLOW)  # a folder's files: a link swapped in is refused
    try:
        fd = os.open(source, flags)
    except OSError as exc:
        raise InputError(f"{source}: cannot be read ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as src:
        info = os.fstat(src.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise InputError(f"{source} is not a regular file (a device, a FIFO or a socket)")
        check_size(source, info.st_size)
        with open(target, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)


@contextlib.contextmanager
def private_copy(path: str | os.PathLike):
    """Copy ``path`` (a file, or a folder such as a SavedModel) into a fresh folder that only this user can
    read (removed afterwards); yields the copy, which keeps the file's name."""
    import shutil
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="edgeattn-"))
    try:
        copy = folder / Path(path).name
        try:
            if Path(path).is_dir():
                for name, file in _folder_files(Path(path)):
                    (copy / name).parent.mkdir(parents=True, exist_ok=True)
                    _copy_regular(file, copy / name, follow=False)
                copy.mkdir(exist_ok=True)
            else:
                _copy_regular(Path(path), copy)
        except OSError as exc:
            raise InputError(f"{path}: cannot be read ({exc.strerror})") from None
        yield copy
    finally:
        shutil.rmtree(folder, ignore_errors=True)
