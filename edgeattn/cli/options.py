"""The arguments and options that several commands share, each declared once here as a decorator.

Where two commands give the same option a different help text (it means something a little different in
each), the name, type and default are declared here and the command passes its help text. Options only one
command has stay with that command, except the rest of the set that says how a Keras file is loaded
(--input-spec, --max-params: export; beside --custom-layers and --unsafe).
"""

from __future__ import annotations

from pathlib import Path

import click

from edgeattn.core import defaults

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 110}


def parse_ints(value: str) -> tuple[int, ...]:
    """A comma-separated list of sizes >= 1 (``--batches`` of verify, ``--batch`` of bench)."""
    try:
        numbers = tuple(int(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of integers") from None
    if not numbers or min(numbers) < 1:
        raise click.BadParameter(f"{value!r}: sizes must be >= 1")
    return numbers


# -- arguments ----------------------------------------------------------------------------------------------

# MODEL: verify, predict, explain, inspect, quantize, bench, score, web
model_argument = click.argument("model", type=click.Path(path_type=Path))
# INPUT: predict, explain
input_argument = click.argument("input_file", metavar="INPUT", type=click.Path(path_type=Path))


# -- writing files ------------------------------------------------------------------------------------------

# train, export, predict, explain, quantize, score, web
force_option = click.option("--force", is_flag=True, help="Replace OUTPUT if it exists.")


def output_option(help: str, folder: bool = False):
    """The required ``-o/--output`` of a command that writes a file (or, with ``folder``, a folder):
    train, export, predict, quantize, score, web."""
    kind = (
        click.Path(file_okay=False, path_type=Path) if folder else click.Path(dir_okay=False, path_type=Path)
    )
    return click.option("-o", "--output", type=kind, required=True, help=help)


def json_file_option(help: str):
    """``--json FILE``: also write the report as JSON (verify, bench)."""
    return click.option("--json", "json_file", type=click.Path(dir_okay=False, path_type=Path), help=help)


# -- loading a Keras model ----------------------------------------------------------------------------------


def keras_option(help: str):
    """``--keras SRC``: the Keras source of the ONNX model (verify, bench)."""
    return click.option("--keras", "keras_src", type=click.Path(path_type=Path), help=help)


# export, verify, bench
custom_layers_option = click.option(
    "--custom-layers",
    "custom_layers",
    multiple=True,
    metavar="FILE.py|MODULE",
    help="Your own layer code, imported so that the model's custom classes load (repeatable). Code you name "
    "here is run; code inside the model file never is.",
)
# export, verify
unsafe_option = click.option(
    "--unsafe",
    is_flag=True,
    help="Allow Lambda layers and unknown classes, i.e. run code from the model file. Only for files you trust.",
)
# export
input_spec_option = click.option(
    "--input-spec",
    "input_specs",
    multiple=True,
    metavar="NAME:DTYPE[AXES]",
    help='The inputs of a model whose file records none (a subclassed model), e.g. "x:float32[batch,10,1]" '
    "(repeatable, in the model's input order; batch/time name free axes). Ignored when the file records them.",
)
# export
max_params_option = click.option(
    "--max-params",
    type=click.IntRange(1),
    default=defaults.MAX_PARAMS,
    show_default=True,
    help="Refuse a model whose config implies more parameters than this, before Keras builds it (a crafted "
    "config can ask for more memory than the machine has).",
)


# -- parity and inputs --------------------------------------------------------------------------------------


def atol_option(help: str):
    """``--atol``: the absolute parity tolerance (export, verify)."""
    return click.option("--atol", type=float, default=defaults.ATOL, show_default=True, help=help)


# export, verify
rtol_option = click.option(
    "--rtol",
    type=float,
    default=defaults.RTOL,
    show_default=True,
    help="Relative tolerance: times each tensor's scale (its largest |keras| value), added to atol.",
)


def seed_option(help: str):
    """``--seed``: the seed of generated data (train, verify)."""
    return click.option("--seed", type=int, default=defaults.SEED, show_default=True, help=help)


def inputs_option(help: str):
    """``--inputs FILE``: inputs of the user's own (.npy/.npz) instead of seeded ones (verify, quantize)."""
    return click.option("--inputs", "inputs_file", type=click.Path(path_type=Path), help=help)


def attention_option(help: str):
    """``--attention``: the attention_weights output, required or also written (predict, score)."""
    return click.option("--attention", is_flag=True, help=help)
