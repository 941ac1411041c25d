"""The one exception hierarchy of edgeattn.

The library raises these; only the CLI turns them into a one-line ``error: ...`` and an exit code.
Each kind carries its exit code: 2 for bad input or usage, 1 for a check that failed.
"""

from __future__ import annotations


class EdgeAttnError(Exception):
    """Base class: a failure the user can act on. ``hint`` says how; ``details`` are one line per item (a
    refused layer, say) when there are several."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None, details: list[str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.details = list(details or [])


class InputError(EdgeAttnError):
    """A file or argument is missing, unreadable, of the wrong kind or the wrong shape."""


class UnsafeModelError(EdgeAttnError):
    """The model file asks for code to be run (Lambda, unknown class, arbitrary function)."""


class UnsupportedModelError(EdgeAttnError):
    """The model is valid Keras but edgeattn cannot export it faithfully."""


class OutputExistsError(EdgeAttnError):
    """The output file exists and ``--force`` was not given."""


class CheckFailedError(EdgeAttnError):
    """A check ran and failed: parity out of tolerance, a custom operator, an unfused recurrent layer."""

    exit_code = 1


class MissingDependencyError(EdgeAttnError):
    """An optional dependency (an extra) is not installed."""


def require(module: str, extra: str):
    """Import ``module`` or raise a MissingDependencyError naming the extra that installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"this needs {module!r}, which is not installed",
            hint=f"pip install 'edgeattn[{extra}]'",
        ) from exc


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type's name when the message is empty)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def require_file(path, what: str, hint: str | None = None):
    """``path`` as a Path if it is a regular file (after following links) of at most ``max_file_bytes()``;
    else InputError: "no such file", "is a directory, not WHAT", "is not a regular file" (a device such as
    /dev/zero, a FIFO, a socket: reading one may never end) or "N MB is over the limit"."""
    import os
    import stat
    from pathlib import Path

    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path} is a directory, not {what}", hint=hint)
    info = os.stat(path)
    if not stat.S_ISREG(info.st_mode):
        raise InputError(
            f"{path} is not a regular file (a device, a FIFO or a socket), not {what}", hint=hint
        )
    check_size(path, info.st_size)
    return path


def max_file_bytes() -> int:
    """The largest file edgeattn reads: ``EDGEATTN_MAX_FILE_MB`` megabytes (default ``defaults.MAX_FILE_MB``)."""
    import os

    from edgeattn.core import defaults

    try:
        return int(float(os.environ.get("EDGEATTN_MAX_FILE_MB", defaults.MAX_FILE_MB)) * 1024 * 1024)
    except (ValueError, OverflowError):
        raise InputError("EDGEATTN_MAX_FILE_MB must be a number of megabytes") from None


def check_size(path, size: int) -> None:
    """Refuse a file (or folder, by its total) of more than ``max_file_bytes()``."""
    limit = max_file_bytes()
    if size > limit:

        def mb(n: int) -> str:
            return f"{n / 1024 / 1024:,.{0 if n >= 10 << 20 else 2}f}"

        raise InputError(
            f"{path}: {mb(size)} MB is over the limit of {mb(limit)} MB (EDGEATTN_MAX_FILE_MB)",
            hint="raise EDGEATTN_MAX_FILE_MB for a file you trust to be that large",
        )


def as_reply(exc: EdgeAttnError) -> dict:
    """An error as a child process reports it to its parent, as JSON (see ``from_reply``)."""
    return {"error": exc.message, "hint": exc.hint, "details": exc.details, "kind": type(exc).__name__}


def from_reply(reply: dict, default: type[EdgeAttnError]) -> EdgeAttnError:
    """The error a child process reported (``as_reply``): of its own kind where that is an EdgeAttnError kind,
    else of ``default``."""
    kind = globals().get(str(reply.get("kind")))
    if not (isinstance(kind, type) and issubclass(kind, EdgeAttnError)):
        kind = default
    return kind(reply["error"], hint=reply.get("hint"), details=reply.get("details"))
