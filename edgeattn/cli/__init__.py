"""The ``edgeattn`` command line: the commands and the rendering of what the library returns, and no library
logic. This folder holds the click group and the entry point (here), the option sets that several commands
share (options), the helpers that show results (render) or prepare a run (common), and the commands by side:
convert_cmds (train, export, verify), run_cmds (predict, explain, inspect, quantize) and deploy_cmds (bench,
score, web). It may import everything below it (edgeattn.core, edgeattn.graphs, edgeattn.deploy,
edgeattn.convert, edgeattn.runtime; TensorFlow's side only inside a command); nothing in the package imports
it.
"""

from __future__ import annotations

import sys

import click

from edgeattn import __version__
from edgeattn.cli.common import checked_predictor
from edgeattn.cli.convert_cmds import export, train, verify
from edgeattn.cli.deploy_cmds import bench, score, web
from edgeattn.cli.options import CONTEXT
from edgeattn.cli.render import emit
from edgeattn.cli.run_cmds import explain, inspect, predict, quantize
from edgeattn.core.errors import EdgeAttnError, first_line

_predictor = checked_predictor  # its name before the split (tests/test_trust_outputs.py calls it)


@click.group(context_settings=CONTEXT)
@click.version_option(__version__, prog_name="edgeattn")
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
def cli(debug: bool) -> None:
    """Put Keras recurrent models with attention on the edge.

    \b
    Train (or bring) a model, export it to a plain ONNX file, prove the two agree, and run it with
    numpy + onnxruntime alone:
      edgeattn train --task find-max -o model.keras
      edgeattn export model.keras -o model.onnx
      edgeattn verify model.onnx --keras model.keras
      edgeattn predict model.onnx x.npy -o y.npy
    """


for _command in (train, export, verify, predict, explain, inspect, quantize, bench, score, web):
    cli.add_command(_command)


# -- entry point ------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the CLI and turn failures into one line and an exit code.

    Exit codes: 0 success; 1 a check failed (parity, custom operator, unfused recurrent layer); 2 bad input or
    usage. Errors print one line ``error: ...``, at most one indented line per refused item, and at most one
    ``hint:`` line; ``--debug`` (before or after the command) shows tracebacks.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    if debug:  # accepted before and after the command name
        args = ["--debug", *(a for a in args if a != "--debug")]
    try:
        cli.main(args=args, prog_name="edgeattn", standalone_mode=False)
    except click.exceptions.Abort:
        emit("error: aborted", err=True)
        sys.exit(130)
    except click.UsageError as exc:
        emit(f"error: {exc.format_message()}", err=True)
        command = exc.ctx.command_path if exc.ctx else "edgeattn"
        emit(f"hint: `{command} --help` shows the arguments and options", err=True)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        emit(f"error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except EdgeAttnError as exc:
        if debug:
            raise
        emit(f"error: {exc.message}", err=True)
        for line in exc.details:
            emit(f"  {line}", err=True)
        if exc.hint:
            emit(f"hint: {exc.hint}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        emit("error: interrupted", err=True)
        sys.exit(130)
    except Exception as exc:
        if debug:
            raise
        text = first_line(exc) if str(exc).strip() else ""
        emit(f"error: unexpected {type(exc).__name__}: {text}", err=True)
        emit("hint: run again with --debug for the traceback, and report it", err=True)
        sys.exit(1)
    sys.exit(0)
