"""What the commands share to show results: lines on stdout, stage lines on stderr, shapes, JSON reports."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click


def emit(text: str = "", err: bool = False) -> None:
    click.echo(text, err=err)


def stage_progress():
    """A callback that shows the stages of long work on stderr, when stderr is a terminal (never in pipes
    and logs, where the only stderr lines are an error and its hint)."""
    if not sys.stderr.isatty():
        return None
    return lambda stage: emit(f"  ... {stage}", err=True)


def format_shape(dims) -> str:
    return "(" + ", ".join(str(d) for d in dims) + ")"


def write_json(json_file: Path | None, data: dict) -> None:
    """The ``--json FILE`` report: nothing without one, stdout for '-', else the file (replaced)."""
    if json_file is None:
        return
    text = json.dumps(data, indent=2, default=float) + "\n"
    if str(json_file) == "-":
        click.echo(text, nl=False)
    else:
        from edgeattn.core.files import write_atomic

        write_atomic(json_file, text.encode(), force=True)
