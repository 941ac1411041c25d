"""The ``edgeattn`` command line. Renders what the library returns; maps errors to exit codes.

Exit codes: 0 success; 1 a check failed (parity, custom operator, unfused recurrent layer); 2 bad input or
usage. Errors print one line ``error: ...``, at most one indented line per refused item, and at most one ``hint:``
line; ``--debug`` (before or after the command) shows tracebacks.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from edgeattn import __version__, defaults
from edgeattn.errors import CheckFailedError, EdgeAttnError, InputError, first_line

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 110}


def _quiet_tensorflow() -> None:
    """Keep TensorFlow's and tf2onnx's start-up chatter out of the user's terminal."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    import logging
    import warnings

    warnings.filterwarnings("ignore", module=r"(keras|tensorflow|tf2onnx)(\.|$)")
    for name in ("tensorflow", "tf2onnx", "absl", "keras"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _progress():
    """A callback that shows the stages of long work on stderr, when stderr is a terminal (never in pipes
    and logs, where the only stderr lines are an error and its hint)."""
    if not sys.stderr.isatty():
        return None
    return lambda stage: _emit(f"  ... {stage}", err=True)


def _emit(text: str = "", err: bool = False) -> None:
    click.echo(text, err=err)


force_option = click.option("--force", is_flag=True, help="Replace OUTPUT if it exists.")


def output_option(help: str, folder: bool = False):
    """The required ``-o/--output`` of a command that writes a file (or, with ``folder``, a folder)."""
    kind = (
        click.Path(file_okay=False, path_type=Path) if folder else click.Path(dir_okay=False, path_type=Path)
    )
    return click.option("-o", "--output", type=kind, required=True, help=help)


custom_layers_option = click.option(
    "--custom-layers",
    "custom_layers",
    multiple=True,
    metavar="FILE.py|MODULE",
    help="Your own layer code, imported so that the model's custom classes load (repeatable). Code you name "
    "here is run; code inside the model file never is.",
)
input_spec_option = click.option(
    "--input-spec",
    "input_specs",
    multiple=True,
    metavar="NAME:DTYPE[AXES]",
    help='The inputs of a model whose file records none (a subclassed model), e.g. "x:float32[batch,10,1]" '
    "(repeatable, in the model's input order; batch/time name free axes). Ignored when the file records them.",
)
max_params_option = click.option(
    "--max-params",
    type=click.IntRange(1),
    default=defaults.MAX_PARAMS,
    show_default=True,
    help="Refuse a model whose config implies more parameters than this, before Keras builds it (a crafted "
    "config can ask for more memory than the machine has).",
)
unsafe_option = click.option(
    "--unsafe",
    is_flag=True,
    help="Allow Lambda layers and unknown classes, i.e. run code from the model file. Only for files you trust.",
)


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


# -- train ------------------------------------------------------------------------------------------------


@cli.command(context_settings=CONTEXT, short_help="Train a model on a synthetic task.")
@click.option(
    "--task",
    type=click.Choice(["find-max", "kernel-regression"]),
    default=defaults.TASK,
    show_default=True,
    help="Synthetic task to train on.",
)
@click.option("--epochs", type=click.IntRange(1, 10_000), default=defaults.EPOCHS, show_default=True)
@click.option("--seed", type=int, default=defaults.SEED, show_default=True, help="Seed for data and weights.")
@click.option(
    "--samples",
    type=click.IntRange(100, 10_000_000),
    default=defaults.TRAIN_SAMPLES,
    show_default=True,
    help="Training samples (validation: a tenth as many, from another seed).",
)
@output_option("Where to save the model (.keras).")
@force_option
def train(task: str, epochs: int, seed: int, samples: int, output: Path, force: bool) -> None:
    """Train a model on a synthetic task and save it as .keras.

    \b
    find-max           the seed's model, LSTM(64) -> Attention(32) -> Dense(1), on x uniform in [0, 1)
                       of shape (n, 10, 1) with y = the largest value over time.
    kernel-regression  Nadaraya-Watson kernel attention with a learned bandwidth on 50 pairs
                       y = 2 sin(x) + x^0.8 + noise; each training query attends over the other pairs.
    Examples:
      edgeattn train --task find-max --epochs 20 --seed 0 -o model.keras
      edgeattn train --task kernel-regression --epochs 5 -o kernel.keras
    """
    import tempfile

    from edgeattn.files import check_writable, write_atomic

    if output.suffix != ".keras":
        raise InputError(f"{output}: the model is saved in Keras 3 format and must end in .keras")
    check_writable(output, force)
    _quiet_tensorflow()
    from edgeattn import tasks

    def progress(epoch: int, total: int, logs: dict) -> None:
        parts = "  ".join(
            f"{k} {v:.4f}" for k, v in logs.items() if isinstance(v, float) and k != "learning_rate"
        )
        _emit(f"epoch {epoch:>{len(str(total))}}/{total}  {parts}", err=True)

    what = "50 pairs" if task == "kernel-regression" else f"{samples} samples"
    _emit(f"training on {task}: {what}, {epochs} epochs, seed {seed}", err=True)
    result = tasks.train(task, epochs=epochs, seed=seed, n_train=samples, on_epoch=progress)
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / "model.keras"
        result.model.save(staged)
        write_atomic(output, staged.read_bytes(), force=force)
    _emit(
        f"validation MAE {result.val_mae:.4f} (always predicting the mean: {result.baseline_mae:.4f}); "
        f"trained in {result.seconds:.1f} s"
    )
    if task == "kernel-regression":
        bandwidth = float(result.model.get_layer("nadaraya_watson").get_weights()[0][0])
        _emit(f"learned bandwidth w = {bandwidth:.4f} (started at 1.0)")
    _emit(f"saved {output} ({output.stat().st_size:,} bytes)")


# -- export -----------------------------------------------------------------------------------------------


@cli.command(context_settings=CONTEXT, short_help="Keras (.keras/.h5/SavedModel) -> checked, plain ONNX.")
@click.argument("src", type=click.Path(path_type=Path))
@output_option(
    "The file to write: .onnx, or .ort (onnxruntime's ORT format, plus NAME.required_operators.config)."
)
@click.option(
    "--opset", type=click.IntRange(13, 23), default=defaults.OPSET, show_default=True, help="ONNX opset."
)
@click.option(
    "--attention-weights",
    "attention_weights",
    is_flag=False,
    flag_value="*",
    default=None,
    metavar="[LAYER]",
    help="Add an output 'attention_weights': (batch, time) for edgeattn's layers, (batch, T_q, T_v) for "
    "Keras' Attention/AdditiveAttention, (batch, heads, T_q, T_v) for MultiHeadAttention. With several "
    "attention layers, name one (--attention-weights=LAYER).",
)
@click.option(
    "--atol",
    type=float,
    default=defaults.ATOL,
    show_default=True,
    help="Parity tolerance: the max abs error every tensor may have, plus --rtol times its scale.",
)
@click.option(
    "--rtol",
    type=float,
    default=defaults.RTOL,
    show_default=True,
    help="Relative tolerance: times each tensor's scale (its largest |keras| value), added to atol.",
)
@click.option("--no-golden", is_flag=True, help="Do not store the reference inputs/outputs in the model.")
@force_option
@custom_layers_option
@input_spec_option
@max_params_option
@unsafe_option
def export(
    src: Path,
    output: Path,
    opset: int,
    attention_weights: str | None,
    atol: float,
    rtol: float,
    no_golden: bool,
    force: bool,
    custom_layers: tuple[str, ...],
    input_specs: tuple[str, ...],
    max_params: int,
    unsafe: bool,
) -> None:
    """Export a Keras model (.keras, .h5 or a SavedModel folder) to a plain ONNX file, checked before it is
    written.

    \b
    The graph must use standard ONNX operators only, hold each recurrent layer as one fused LSTM/GRU/RNN
    node, keep the batch axis dynamic, and match Keras within --atol + --rtol * scale (each output's largest
    |keras| value) on seeded inputs (batches 1, 7, 64).
    Otherwise nothing is written and the exit code is 1.
    Example:
      edgeattn export model.keras -o model.onnx
      edgeattn export model.keras -o model.onnx --attention-weights --force
      edgeattn export model.h5 -o model.ort      # for a minimal onnxruntime build
      edgeattn export model.h5 -o model.onnx --custom-layers my_layers.py   # your own layer classes
      edgeattn export model.h5 -o model.onnx --attention-weights=mha        # one of several attention layers
      edgeattn export my_model/ -o model.onnx     # a SavedModel folder (saved_model.pb, variables/)
      edgeattn export sub.h5 -o model.onnx --custom-layers my_model.py --input-spec "x:float32[batch,10,1]"
    """
    _quiet_tensorflow()
    from edgeattn.export import ExportOptions
    from edgeattn.export import export as run_export

    options = ExportOptions(
        opset=opset,
        attention_weights=True if attention_weights == "*" else (attention_weights or False),
        force=force,
        unsafe=unsafe,
        atol=atol,
        rtol=rtol,
        golden=not no_golden,
        custom_layers=custom_layers,
        input_specs=input_specs,
        max_params=max_params,
    )
    result = run_export(src, output, options, progress=_progress())
    s = result.summary
    ops = ", ".join(f"{k} {v}" for k, v in s.op_histogram.items())
    _emit(f"exported {src} -> {result.path} in {result.seconds:.1f} s")
    _emit(f"  graph   {s.nodes} nodes (opset {s.opset}, domains {', '.join(s.domains)}): {ops}")
    _emit(f"  size    {result.size_bytes:,} bytes, {s.parameters:,} parameters")
    for name, shape, dtype in s.inputs:
        _emit(f"  input   {name} {_shape(shape)} {dtype}")
    for name, shape, dtype in s.outputs:
        _emit(f"  output  {name} {_shape(shape)} {dtype}")
    _emit(
        f"  parity  max abs error {result.parity.max_abs:.2e} over {result.parity.inputs} "
        f"(atol {atol:g} + rtol {rtol:g} * each tensor's scale): pass"
    )
    if result.ort_max_abs is not None:
        from edgeattn.ortformat import config_path

        _emit(f"  ORT     same outputs as the ONNX graph (max abs difference {result.ort_max_abs:.2g})")
        _emit(f"  ops     {config_path(result.path)} (for a minimal onnxruntime build)")


def _shape(shape) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ")"


# -- verify -----------------------------------------------------------------------------------------------


def _ints(value: str) -> tuple[int, ...]:
    try:
        numbers = tuple(int(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of integers") from None
    if not numbers or min(numbers) < 1:
        raise click.BadParameter(f"{value!r}: sizes must be >= 1")
    return numbers


@cli.command(context_settings=CONTEXT, short_help="Prove the ONNX model computes what Keras computes.")
@click.argument("model", type=click.Path(path_type=Path))
@click.option(
    "--keras",
    "keras_src",
    type=click.Path(path_type=Path),
    help="The Keras source (.keras/.h5/SavedModel folder). Default: the source recorded in the model's metadata.",
)
@click.option(
    "--golden",
    is_flag=True,
    help="Check the reference outputs stored in the model, with onnxruntime alone (no TensorFlow).",
)
@click.option("--inputs", "inputs_file", type=click.Path(path_type=Path), help="Inputs to use (.npy/.npz).")
@click.option("--batches", default=None, help="Batch sizes of the seeded inputs.  [default: 1,7,N]")
@click.option(
    "--samples",
    type=click.IntRange(1, 100_000),
    default=defaults.VERIFY_SAMPLES,
    show_default=True,
    help="Samples in the largest seeded batch (N).",
)
@click.option(
    "--lengths", default=None, help="Time lengths to try where the time axis is free.  [default: 1,5,10,30]"
)
@click.option(
    "--atol", type=float, default=defaults.ATOL, show_default=True, help="Absolute tolerance of every tensor."
)
@click.option(
    "--rtol",
    type=float,
    default=defaults.RTOL,
    show_default=True,
    help="Relative tolerance: times each tensor's scale (its largest |keras| value), added to atol.",
)
@click.option("--seed", type=int, default=defaults.SEED, show_default=True, help="Seed of the random inputs.")
@click.option(
    "--json",
    "json_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the report as JSON ('-' for stdout).",
)
@click.option(
    "--outputs-only",
    is_flag=True,
    help="Compare the model's outputs only, not every layer's (the default when the export recorded them).",
)
@custom_layers_option
@unsafe_option
def verify(
    model: Path,
    keras_src: Path | None,
    golden: bool,
    inputs_file: Path | None,
    batches: str | None,
    samples: int,
    lengths: str | None,
    atol: float,
    rtol: float,
    seed: int,
    json_file: Path | None,
    outputs_only: bool,
    custom_layers: tuple[str, ...],
    unsafe: bool,
) -> None:
    """Prove that an ONNX model computes what its Keras model computes.

    \b
    Both get the same seeded inputs; per output it prints max abs, max rel and mean abs error and the
    worst sample. A tensor (an output, a layer's output) passes when |onnx - keras| <= atol + rtol * scale
    everywhere, scale being its largest |keras| value: the tolerance it got is printed beside it.
    Exit 0: everything passed; 1: an output or a structure check failed; 2: bad input.
    Examples:
      edgeattn verify model.onnx --keras model.keras
      edgeattn verify model.onnx                 # finds the source from the model's metadata
      edgeattn verify model.onnx --golden        # on the device: stored reference, no TensorFlow
    """
    if golden:
        _verify_golden(model, json_file)
        return
    _quiet_tensorflow()
    from edgeattn import verify as verify_lib

    notes = []
    if keras_src is None:
        keras_src, note = verify_lib.find_source(model)
        notes.append(note)
    report = verify_lib.verify_against_keras(
        model,
        keras_src,
        batches=_ints(batches) if batches else (*defaults.VERIFY_BATCHES[:-1], samples),
        lengths=_ints(lengths) if lengths else None,
        atol=atol,
        rtol=rtol,
        inputs_file=inputs_file,
        seed=seed,
        unsafe=unsafe,
        custom_layers=custom_layers,
        layers=not outputs_only,
    )
    for note in notes:
        _emit(note)
    _emit(f"{model} vs {keras_src}: {report.inputs}; {report.provider}")
    _emit(
        f"{'output':<20} {'max abs':>10} {'tolerance':>10} {'scale':>10} {'max rel':>10} {'mean abs':>10}  "
        f"{'worst':<24} result"
    )
    for o in report.outputs:
        _emit(_parity_row(o.name, o))
    if report.layers:
        _emit(f"{'layer (every output of each, in order)':<40}")
        first = report.first_divergent_layer
        for o in report.layers:
            mark = "  <- diverges first" if o is first else ""
            _emit(_parity_row(f"  {o.name}", o) + mark)
    for problem in report.structure_problems:
        _emit(f"structure: {problem}")
    _write_json(json_file, report.to_dict())
    if not report:
        raise CheckFailedError(f"verify failed: {report.failures()[0]}")
    _emit(f"verify: pass (atol {atol:g}, rtol {rtol:g})")


def _parity_row(name: str, o) -> str:
    worst = f"{o.worst_case} #{o.worst_sample}"
    return (
        f"{name:<20} {o.max_abs:>10.3g} {o.tol:>10.3g} {o.scale:>10.3g} {o.max_rel:>10.3g} {o.mean_abs:>10.3g}  "
        f"{worst:<24} "
        f"{'pass' if o.passed else 'FAIL'}"
    )


def _verify_golden(model: Path, json_file: Path | None) -> None:
    predictor = _predictor(model)
    try:
        result = predictor.self_check()
    except ValueError as exc:
        raise InputError(str(exc), hint="re-export without --no-golden") from None
    _emit(f"{model}: stored reference outputs re-run with onnxruntime ({predictor.providers[0]})")
    for name, r in result["outputs"].items():
        _emit(
            f"{name:<20} max abs {r['max_abs']:.3g} (atol {r['atol']:g}) {'pass' if r['passed'] else 'FAIL'}"
        )
    _write_json(json_file, result)
    if not result["passed"]:
        raise CheckFailedError("verify --golden failed: the model no longer computes the stored outputs")
    _emit("verify --golden: pass")


def _write_json(json_file: Path | None, data: dict) -> None:
    if json_file is None:
        return
    text = json.dumps(data, indent=2, default=float) + "\n"
    if str(json_file) == "-":
        click.echo(text, nl=False)
    else:
        from edgeattn.files import write_atomic

        write_atomic(json_file, text.encode(), force=True)


# -- predict ----------------------------------------------------------------------------------------------


def _predictor(model: Path, provider: str | None = None):
    """A Predictor on the bytes that were checked: the file is read once, the contained child parses a private
    copy of those bytes (and of its external data), and the Predictor is built from that copy, not the path."""
    from edgeattn.onnxfile import checked_copy
    from edgeattn.runtime import Predictor

    with checked_copy(model, ort_format=True) as (copy, _):
        try:
            predictor = Predictor(copy, providers=[provider] if provider else None)
        except ValueError as exc:
            raise InputError(str(exc).replace(copy, str(model))) from None
    predictor.path = os.fspath(model)  # messages name the user's file
    return predictor


@cli.command(context_settings=CONTEXT, short_help="Run an ONNX model with onnxruntime (no TensorFlow).")
@click.argument("model", type=click.Path(path_type=Path))
@click.argument("input_file", metavar="INPUT", type=click.Path(path_type=Path))
@output_option("Where to write the predictions (.npz, .npy, .csv or .json).")
@click.option(
    "--provider", help="Execution provider: cpu, cuda, tensorrt, coreml, ... (default: best available)."
)
@click.option(
    "--attention",
    is_flag=True,
    help="Require the attention_weights output (exit 2 if the model has none); every output is written anyway.",
)
@click.option(
    "--output-name",
    "output_names",
    multiple=True,
    metavar="NAME",
    help="Write only this output of the model (repeatable). Default: every output.",
)
@force_option
def predict(
    model: Path,
    input_file: Path,
    output: Path,
    provider: str | None,
    attention: bool,
    output_names: tuple[str, ...],
    force: bool,
) -> None:
    """Run an ONNX model on inputs with onnxruntime (no TensorFlow) and write every output it computes.

    \b
    INPUT: .npy; .npz (one array, or one per model input); .csv (one sample per row, reshaped to the
    model's per-sample shape, e.g. 10 values per row for the seed model); .json or '-' (JSON on stdin).
    A text model (exported from a TextVectorization) takes texts: .txt (one text per line), .json (a list
    of strings) or '-'; they are tokenized as Keras did, by the rules stored in the model.
    OUTPUT, by suffix: .npz (one array per output, named after it) or .json (one object, an entry per
    output name) hold every output; .npy and .csv hold one array each: the first output goes to OUTPUT, each
    further one beside it as OUTPUT-STEM.NAME.npy/.csv (e.g. y.attention_weights.npy). --output-name NAME
    writes only the outputs named. It says which output it wrote to which file. Nothing is written if INPUT
    is refused.
    Examples:
      edgeattn predict model.onnx x.npy -o y.npy
      edgeattn predict model.onnx x.npy -o outputs.npz          # every output, by name
      edgeattn predict model.onnx x.npy -o score.npy --output-name score
      edgeattn predict model.onnx x.csv -o y.json --attention
      echo '[[[0.1],[0.9],[0.2],[0.3],[0.4],[0.5],[0.6],[0.7],[0.8],[0.0]]]' | edgeattn predict model.onnx - -o y.json
      edgeattn predict text-model.onnx texts.txt -o y.json
    """
    from edgeattn.arrays import encode_outputs, read_input
    from edgeattn.files import check_writable, write_atomic

    predictor = _predictor(model, provider)
    names = [o.name for o in predictor.outputs]
    unknown = [n for n in output_names if n not in names]
    if unknown:
        raise InputError(
            f"{model} has no output {unknown[0]!r}; its outputs: {', '.join(map(repr, names))}",
            hint="pick one of them with --output-name, or leave it out to write every output",
        )
    if attention and not predictor.has_attention:
        raise InputError(
            f"{model} has no attention_weights output", hint="export it with --attention-weights"
        )
    chosen = list(dict.fromkeys(output_names)) or names
    from edgeattn.runtime import TEXT_KEY

    text = TEXT_KEY in predictor.metadata  # a text model: INPUT holds texts (edgeattn.textmodel)
    if text:
        from edgeattn.textmodel import read_texts
    x = read_texts(input_file) if text else read_input(input_file, predictor.inputs)
    try:
        computed = dict(zip(names, predictor.run(predictor.tokenize(x) if text else x)))
    except (TypeError, ValueError) as exc:
        raise InputError(str(exc)) from None
    files = encode_outputs(output, {name: computed[name] for name in chosen})
    for path in files:
        check_writable(path, force)
    for path, (data, _) in files.items():
        write_atomic(path, data, force=force)
    n = next(iter(computed.values())).shape[0] if computed else 0
    written = "; ".join(
        f"{path}: {', '.join(f'{name} {_shape(computed[name].shape)}' for name in held)}"
        for path, (_, held) in files.items()
    )
    _emit(f"wrote {written} ({n} samples, {predictor.providers[0]})")
    left = [name for name in names if name not in chosen]
    if left:
        _emit(f"not written: {', '.join(left)} (--output-name picked the others)")


# -- explain ----------------------------------------------------------------------------------------------


@cli.command(context_settings=CONTEXT, short_help="Show where the model looks: attention per sample.")
@click.argument("model", type=click.Path(path_type=Path))
@click.argument("input_file", metavar="INPUT", type=click.Path(path_type=Path))
@click.option(
    "--png",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also draw a heatmap (samples x time, the input series above it). Needs edgeattn[plot].",
)
@click.option(
    "--samples",
    type=click.IntRange(1, 10_000),
    default=defaults.EXPLAIN_SAMPLES,
    show_default=True,
    help="How many samples (from the start of INPUT) to explain.",
)
@force_option
def explain(model: Path, input_file: Path, png: Path | None, samples: int, force: bool) -> None:
    """Print each sample's outputs and its attention over time; optionally draw a heatmap.

    \b
    MODEL must be exported with --attention-weights. INPUT is .npy (or .npz, one array per input).
    It explains the attention_weights output; the first line says so and names every other output, and
    each sample shows all of them (the prediction, and any further output by name).
    In the text, each step is a shade from ' ' (no weight) to '█' (the sample's largest weight).
    Example:
      edgeattn explain models/seed.onnx x.npy --png attention.png --samples 8
    """
    from edgeattn import explain as explain_lib
    from edgeattn.files import check_writable, write_atomic

    if png is not None:
        check_writable(png, force)
    from edgeattn.arrays import read_input

    predictor = _predictor(model)
    result = explain_lib.explain(predictor, read_input(input_file, predictor.inputs), samples=samples)
    _emit(explain_lib.render_text(result))
    if png is not None:
        write_atomic(png, explain_lib.render_png(result, title=f"{model.name}: attention"), force=force)
        _emit(f"wrote {png}")


# -- inspect ----------------------------------------------------------------------------------------------


# What each value of edgeattn.source_format means (the path the source took at export).
SOURCE_PATHS = {
    "keras": "a Keras 3 .keras file",
    "h5": "a Keras 3 .h5 file",
    "keras-keras2": "a tf.keras 2 .keras file, its config rewritten for Keras 3",
    "h5-keras2": "a Keras 2 .h5 file, its config rewritten for Keras 3",
    "savedmodel-keras": "a Keras 2 SavedModel folder: built from its Keras metadata, weights from variables/",
    "savedmodel-graph": "a SavedModel folder without a Keras config: its serving signature's graph",
}


@cli.command(context_settings=CONTEXT, short_help="Describe an ONNX model.")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def inspect(model: Path, as_json: bool) -> None:
    """Describe an ONNX model: inputs, outputs, opset, operators, size, edgeattn metadata.

    \b
    Example:
      edgeattn inspect model.onnx
    """
    from edgeattn.onnxfile import describe

    info = describe(model)
    meta = info["metadata"]
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    _emit(
        f"{model}: {info['size_bytes']:,} bytes, opset {info['opset']}, {info['nodes']} nodes, "
        f"{info['parameters']:,} parameters"
    )
    for kind in ("input", "output"):
        for spec in info[f"{kind}s"]:
            _emit(f"  {kind:<7} {spec['name']} {_shape(spec['shape'])} {spec['dtype']}")
    _emit("  ops     " + ", ".join(f"{k} {v}" for k, v in info["op_histogram"].items()))
    largest = ", ".join(f"{i['name']} {i['shape']} {i['bytes']:,} B" for i in info["initializers"][:3])
    _emit(f"  weights {len(info['initializers'])} initializers; largest: {largest}")
    _emit(
        "  data    "
        + (
            f"external: {', '.join(info['external_data'])}"
            if info["external_data"]
            else "all inside the file"
        )
    )
    from edgeattn.runtime import TEXT_KEY

    for key, value in meta.items():
        if key == TEXT_KEY:  # a text model's tokenizer rules: one line, without the vocabulary
            from edgeattn.textmodel import describe_spec

            value = describe_spec(value)
        if key == "edgeattn.source_format" and value in SOURCE_PATHS:
            value = f"{value} ({SOURCE_PATHS[value]})"
        _emit(f"  {key[len('edgeattn.') :]:<20} {value}")


# -- quantize ---------------------------------------------------------------------------------------------


@cli.command(context_settings=CONTEXT, short_help="Store the weights as int8 or float16 (standard ops).")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--mode", type=click.Choice(["int8", "fp16"]), required=True, help="How to store the weights.")
@output_option("The .onnx to write.")
@click.option(
    "--max-error",
    type=click.FloatRange(0, 1),
    default=None,
    help="Largest output error allowed, as a fraction of the output's scale.  [default: "
    + ", ".join(f"{mode} {value:g}" for mode, value in defaults.MAX_ERROR.items())
    + "]",
)
@click.option(
    "--inputs",
    "inputs_file",
    type=click.Path(path_type=Path),
    help="Measure the error on these inputs (.npy/.npz; your real data). Default: seeded in-range inputs.",
)
@force_option
def quantize(
    model: Path, mode: str, output: Path, max_error: float | None, inputs_file: Path | None, force: bool
) -> None:
    """Write a smaller copy of MODEL: weights stored as int8 (per-channel scales, DequantizeLinear) or
    float16 (Cast), the ops still float and standard, so any onnxruntime runs it.

    \b
    Both models run on the same inputs (--inputs, or seeded U[0,1) and U[-1,1) samples); per output it
    prints the max abs error and that error as a fraction of the output's scale on those inputs (the larger
    of its range and its peak magnitude). Above --max-error nothing is written and the exit code is 1.
    Examples:
      edgeattn quantize model.onnx --mode int8 -o model.int8.onnx
      edgeattn quantize model.onnx --mode fp16 -o model.fp16.onnx --max-error 0.005
    """
    from edgeattn.quantize import quantize as run_quantize

    result = run_quantize(model, output, mode, max_error=max_error, force=force, inputs_file=inputs_file)
    _emit(
        f"quantized {model} -> {result.path} ({mode}, {result.tensors} weight tensors): "
        f"{result.float_bytes:,} -> {result.size_bytes:,} bytes ({result.ratio:.2f}x)"
    )
    _emit(f"  error on {result.cases}:")
    for o in result.outputs:
        _emit(f"  {o.name:<20} max abs {o.max_abs:.3g} = {o.relative:.3%} of its scale {o.scale:.3g}")
    _emit(f"  pass (max error {result.max_error:.2%} of the scale)")


# -- bench ------------------------------------------------------------------------------------------------


@cli.command(context_settings=CONTEXT, short_help="Latency and throughput, contenders side by side.")
@click.argument("model", type=click.Path(path_type=Path))
@click.option(
    "--keras", "keras_src", type=click.Path(path_type=Path), help="Also time this Keras source (tf.function)."
)
@click.option("--eager", is_flag=True, help="With --keras: also time Keras eager calls (slow).")
@click.option(
    "--litert", is_flag=True, help="With --keras: also time the model converted to LiteRT (XNNPACK)."
)
@click.option(
    "--batch",
    "batches",
    default=",".join(map(str, defaults.BENCH_BATCHES)),
    show_default=True,
    help="Batch sizes, comma-separated.",
)
@click.option(
    "--time",
    "time_steps",
    type=click.IntRange(1, 100_000),
    default=None,
    help=f"Time steps to time, for models whose time axis is free.  [default: {defaults.TIME_STEPS}]",
)
@click.option(
    "--threads",
    type=click.IntRange(1, 256),
    default=defaults.BENCH_THREADS,
    show_default=True,
    help="Intra-op threads, every contender (TensorFlow's set before it starts).",
)
@click.option(
    "--seconds",
    type=click.FloatRange(0.1, 600),
    default=defaults.BENCH_SECONDS,
    show_default=True,
    help="Timing budget per contender and batch size.",
)
@click.option(
    "--no-fold-weights",
    "keep_quantized",
    is_flag=True,
    help="Run an int8/fp16 file's stored graph (DequantizeLinear/Cast on every call) instead of folding its "
    "weights to float at load.",
)
@click.option(
    "--no-fuse-for-runtime",
    "stored_graph",
    is_flag=True,
    help="Run the Predictor on the stored graph (standard ops only) instead of letting onnxruntime put its "
    "fused kernels in its place, and time the default fused Predictor beside it.",
)
@click.option(
    "--profile",
    is_flag=True,
    help="Then profile the Predictor's session per kernel with onnxruntime's profiler, at each batch size for "
    "the timing budget: the top kernels by time (node, op type, share, us per call) and the total.",
)
@click.option(
    "--json",
    "json_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the results as JSON (with --profile, every kernel under 'profile').",
)
@custom_layers_option
def bench(
    model: Path,
    keras_src: Path | None,
    eager: bool,
    litert: bool,
    batches: str,
    time_steps: int | None,
    threads: int,
    seconds: float,
    keep_quantized: bool,
    stored_graph: bool,
    profile: bool,
    json_file: Path | None,
    custom_layers: tuple[str, ...],
) -> None:
    """Measure p50/p99 latency and throughput of the edgeattn Predictor on MODEL against:

    \b
      floor          the model's fused recurrent node(s) alone, same weights, fed the tensors that reach
                     them, writing exactly the outputs of theirs that the model reads (all hidden states
                     when an attention reads them, the final state alone when only it is read), through
                     onnxruntime's Python API: what any ONNX deployment of this model pays at least
                     (models without a recurrent node have no floor row)
      --keras SRC    the source model under tf.function (and with --eager, eagerly)
      --litert       the source converted to LiteRT and run with XNNPACK (needs --keras)
    Every contender gets the same inputs; tokens for integer inputs. TensorFlow and LiteRT run in a child
    process whose thread count is set before TensorFlow starts; the threads column is the count in effect.
    The contenders take turns in 5 rounds; the x columns are ratios of p50s taken round by round (median,
    and the lowest and highest round). Compare ratios, not absolute times, between machines or runs.
    --profile then runs the Predictor under onnxruntime's profiler and lists where its time goes, per kernel.
    Examples:
      edgeattn bench model.onnx
      edgeattn bench model.onnx --keras model.keras --litert --batch 1,256 --json bench.json
      edgeattn bench transformer.onnx --keras transformer.keras --litert --time 32
      edgeattn bench transformer.onnx --no-fuse-for-runtime --profile
    """
    from edgeattn import bench as bench_lib

    if (eager or litert) and keras_src is None:
        raise InputError("--eager and --litert time the Keras source: give it with --keras SRC")
    report = bench_lib.run(
        model,
        batches=_ints(batches),
        threads=threads,
        keras_source=keras_src,
        litert=litert,
        eager=eager,
        seconds=seconds,
        time_steps=time_steps,
        progress=_progress(),
        custom_layers=custom_layers,
        fold_weights=not keep_quantized,
        fuse_for_runtime=not stored_graph,
    )
    steps = f"time {report.time_steps}" if report.time_steps else "no time axis"
    _emit(f"{model}: {steps}, {threads} thread(s) asked; {report.machine}")
    refs = report.references
    head = f"{'contender':<34} {'threads':>7} {'batch':>5} {'p50 us':>11} {'p99 us':>11} {'samples/s':>12}"
    _emit(head + "".join(f" {'x ' + ref:>18}" for ref in refs) + f" {'vs Predictor':>12}")
    for r in report.rows:
        agree = f"{r.max_abs_vs_predictor:.1e}" if r.max_abs_vs_predictor is not None else "-"
        _emit(
            f"{r.name:<34} {r.threads if r.threads else 'auto':>7} {r.batch:>5} {r.p50_us:>11,.1f} "
            f"{r.p99_us:>11,.1f} {r.samples_per_s:>12,.0f}"
            + "".join(f" {r.x[ref]!s:>18}" for ref in refs)
            + f" {agree:>12}"
        )
    for name, what in report.notes.items():
        _emit(f"{name}: {what}")
    for name, why in report.skipped.items():
        _emit(f"skipped {name}: {why}")
    data = report.to_dict()
    if profile:
        from edgeattn import profile as profile_lib

        profiles = profile_lib.profile(
            model,
            batches=_ints(batches),
            threads=threads,
            seconds=seconds,
            time_steps=time_steps,
            fold_weights=not keep_quantized,
            fuse_for_runtime=not stored_graph,
            progress=_progress(),
        )
        for one in profiles:
            _emit()
            for line in profile_lib.table(one):
                _emit(line)
        data["profile"] = [one.to_dict() for one in profiles]
    _write_json(json_file, data)


# -- score ----------------------------------------------------------------------------------------------


@cli.command(context_settings=CONTEXT, short_help="Score data sets on Ray (a local cluster by default).")
@click.argument("model", type=click.Path(path_type=Path))
@click.argument("data", nargs=-1, required=True)
@output_option("The folder to write.", folder=True)
@click.option(
    "--attention", is_flag=True, help="Also write the attention weights (column attention_weights)."
)
@click.option(
    "--batch-size",
    type=click.IntRange(1, 10_000_000),
    default=defaults.SCORE_BATCH_SIZE,
    show_default=True,
    help="Rows per batch.",
)
@click.option(
    "--workers", type=click.IntRange(1, 100_000), help="Ray actors, one Predictor each.  [default: CPUs]"
)
@click.option(
    "--address",
    help="Join an existing Ray cluster ('auto', or 'ray://HOST:10001') instead of starting a local one.",
)
@force_option
def score(
    model: Path,
    data: tuple[str, ...],
    output: Path,
    attention: bool,
    batch_size: int,
    workers: int | None,
    address: str | None,
    force: bool,
) -> None:
    """Score DATA (files or globs of .npy / .parquet) with MODEL on Ray Data; one parquet file per input file.

    \b
    .npy: an array of shape (n, *input shape). .parquet: a column named like each model input, one sample
    per row as nested lists (rows may differ in length along a free time axis). Every file is checked
    before anything runs (the file, column and first bad row are named; exit 2). Without --address, Ray
    starts a local cluster on this machine. OUTPUT gets one .parquet per input file (rows in input order;
    columns y, and attention_weights with --attention) and manifest.json; it appears only when complete.
    Examples:
      edgeattn score models/seed.onnx 'data/*.parquet' -o scores
      edgeattn score model.onnx x.npy -o scores --attention --workers 2 --force
      edgeattn score model.onnx 's3like/*.parquet' -o scores --address auto   # after `ray start --head`
    """
    from edgeattn import score as score_lib

    result = score_lib.score(
        model,
        data,
        output,
        attention=attention,
        batch_size=batch_size,
        workers=workers,
        address=address,
        force=force,
        progress=_progress(),
    )
    for f in result.files:
        _emit(f"  {f.path} -> {result.out_dir / f.output}: {f.rows:,} rows")
    _emit(
        f"scored {result.rows:,} rows in {result.seconds:.2f} s ({result.samples_per_s:,.0f} samples/s) on "
        f"{result.workers} worker(s), Ray {result.address} (started in {result.startup_seconds:.1f} s); "
        f"wrote {result.out_dir}/manifest.json"
    )


# -- web ------------------------------------------------------------------------------------------------


@cli.command(context_settings=CONTEXT, short_help="A static web page that runs the model in the browser.")
@click.argument("model", type=click.Path(path_type=Path))
@output_option("The folder to write.", folder=True)
@click.option(
    "--ort-web",
    type=click.Path(path_type=Path),
    help="A local onnxruntime-web dist folder to copy (e.g. node_modules/onnxruntime-web/dist). "
    "Default: a pinned onnxruntime-web from a public CDN, with Subresource Integrity.",
)
@click.option("--serve", is_flag=True, help="Then serve the folder on 127.0.0.1 (Ctrl-C stops).")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=defaults.PORT,
    show_default=True,
    help="Port for --serve.",
)
@force_option
def web(model: Path, output: Path, ort_web: Path | None, serve: bool, port: int, force: bool) -> None:
    """Write a static site that runs MODEL in the browser with onnxruntime-web (WebAssembly, 1 thread).

    \b
    On load the page re-runs the reference inputs stored in the model and compares them with the stored
    outputs (verify --golden, in the browser): #self-check gets data-status="pass" or "fail". A form runs
    one sample (JSON, or a random one) and shows the outputs, the time in ms and the attention heatmap.
    edgeattn.js can be imported by your own page: EdgeAttn.load(url), .predict(inputs), .selfCheck().
    The folder is static: copy it to any static host (it must be served over http(s), not file://).
    Examples:
      edgeattn web model.onnx -o site --serve
      edgeattn web model.onnx -o site --ort-web node_modules/onnxruntime-web/dist --force
    """
    from edgeattn import web as web_lib

    site = web_lib.build(model, output, ort_web=ort_web, force=force)
    where = "copied into ort/" if site.ort_source == "local" else f"from {site.ort_source} (pinned, SRI)"
    _emit(f"wrote {site.path}/: {', '.join(site.files)} ({site.size_bytes:,} bytes); onnxruntime-web {where}")
    if not serve:
        _emit(f"serve it with: edgeattn web {model} -o {output} --force --serve   (or any static web server)")
        return
    httpd = web_lib.server(site.path, port)
    _emit(f"serving {site.path} on http://127.0.0.1:{httpd.server_address[1]}/ (Ctrl-C stops)")
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        _emit("stopped")
    finally:
        httpd.server_close()


# -- entry point ------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the CLI and turn failures into one line and an exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    if debug:  # accepted before and after the command name
        args = ["--debug", *(a for a in args if a != "--debug")]
    try:
        cli.main(args=args, prog_name="edgeattn", standalone_mode=False)
    except click.exceptions.Abort:
        _emit("error: aborted", err=True)
        sys.exit(130)
    except click.UsageError as exc:
        _emit(f"error: {exc.format_message()}", err=True)
        command = exc.ctx.command_path if exc.ctx else "edgeattn"
        _emit(f"hint: `{command} --help` shows the arguments and options", err=True)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        _emit(f"error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except EdgeAttnError as exc:
        if debug:
            raise
        _emit(f"error: {exc.message}", err=True)
        for line in exc.details:
            _emit(f"  {line}", err=True)
        if exc.hint:
            _emit(f"hint: {exc.hint}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        _emit("error: interrupted", err=True)
        sys.exit(130)
    except Exception as exc:
        if debug:
            raise
        text = first_line(exc) if str(exc).strip() else ""
        _emit(f"error: unexpected {type(exc).__name__}: {text}", err=True)
        _emit("hint: run again with --debug for the traceback, and report it", err=True)
        sys.exit(1)
    sys.exit(0)


if __name__ == "__main__":
    main()
