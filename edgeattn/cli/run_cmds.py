"""The commands that use an ONNX model with onnxruntime alone (no TensorFlow): predict, explain, inspect,
quantize."""

from __future__ import annotations

import json
from pathlib import Path

import click

from edgeattn.cli.common import checked_predictor
from edgeattn.cli.options import (
    CONTEXT,
    attention_option,
    force_option,
    input_argument,
    inputs_option,
    model_argument,
    output_option,
)
from edgeattn.cli.render import emit, format_shape
from edgeattn.core import defaults
from edgeattn.core.errors import InputError

# -- predict ----------------------------------------------------------------------------------------------


@click.command(context_settings=CONTEXT, short_help="Run an ONNX model with onnxruntime (no TensorFlow).")
@model_argument
@input_argument
@output_option("Where to write the predictions (.npz, .npy, .csv or .json).")
@click.option(
    "--provider", help="Execution provider: cpu, cuda, tensorrt, coreml, ... (default: best available)."
)
@attention_option(
    "Require the attention_weights output (exit 2 if the model has none); every output is written anyway."
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
    from edgeattn.core.arrays import encode_outputs, read_input
    from edgeattn.core.files import check_writable, write_atomic

    predictor = checked_predictor(model, provider)
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

    text = TEXT_KEY in predictor.metadata  # a text model: INPUT holds texts (edgeattn.convert.textmodel)
    if text:
        from edgeattn.convert.textmodel import read_texts
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
        f"{path}: {', '.join(f'{name} {format_shape(computed[name].shape)}' for name in held)}"
        for path, (_, held) in files.items()
    )
    emit(f"wrote {written} ({n} samples, {predictor.providers[0]})")
    left = [name for name in names if name not in chosen]
    if left:
        emit(f"not written: {', '.join(left)} (--output-name picked the others)")


# -- explain ----------------------------------------------------------------------------------------------


@click.command(context_settings=CONTEXT, short_help="Show where the model looks: attention per sample.")
@model_argument
@input_argument
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
    from edgeattn.core.files import check_writable, write_atomic
    from edgeattn.deploy import explain as explain_lib

    if png is not None:
        check_writable(png, force)
    from edgeattn.core.arrays import read_input

    predictor = checked_predictor(model)
    result = explain_lib.explain(predictor, read_input(input_file, predictor.inputs), samples=samples)
    emit(explain_lib.render_text(result))
    if png is not None:
        write_atomic(png, explain_lib.render_png(result, title=f"{model.name}: attention"), force=force)
        emit(f"wrote {png}")


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


@click.command(context_settings=CONTEXT, short_help="Describe an ONNX model.")
@model_argument
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def inspect(model: Path, as_json: bool) -> None:
    """Describe an ONNX model: inputs, outputs, opset, operators, size, edgeattn metadata.

    \b
    Example:
      edgeattn inspect model.onnx
    """
    from edgeattn.graphs.onnxfile import describe

    info = describe(model)
    meta = info["metadata"]
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    emit(
        f"{model}: {info['size_bytes']:,} bytes, opset {info['opset']}, {info['nodes']} nodes, "
        f"{info['parameters']:,} parameters"
    )
    for kind in ("input", "output"):
        for spec in info[f"{kind}s"]:
            emit(f"  {kind:<7} {spec['name']} {format_shape(spec['shape'])} {spec['dtype']}")
    emit("  ops     " + ", ".join(f"{k} {v}" for k, v in info["op_histogram"].items()))
    largest = ", ".join(f"{i['name']} {i['shape']} {i['bytes']:,} B" for i in info["initializers"][:3])
    emit(f"  weights {len(info['initializers'])} initializers; largest: {largest}")
    emit(
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
            from edgeattn.convert.textmodel import describe_spec

            value = describe_spec(value)
        if key == "edgeattn.source_format" and value in SOURCE_PATHS:
            value = f"{value} ({SOURCE_PATHS[value]})"
        emit(f"  {key[len('edgeattn.') :]:<20} {value}")


# -- quantize ---------------------------------------------------------------------------------------------


@click.command(context_settings=CONTEXT, short_help="Store the weights as int8 or float16 (standard ops).")
@model_argument
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
@inputs_option(
    "Measure the error on these inputs (.npy/.npz; your real data). Default: seeded in-range inputs."
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
    from edgeattn.deploy.quantize import quantize as run_quantize

    result = run_quantize(model, output, mode, max_error=max_error, force=force, inputs_file=inputs_file)
    emit(
        f"quantized {model} -> {result.path} ({mode}, {result.tensors} weight tensors): "
        f"{result.float_bytes:,} -> {result.size_bytes:,} bytes ({result.ratio:.2f}x)"
    )
    emit(f"  error on {result.cases}:")
    for o in result.outputs:
        emit(f"  {o.name:<20} max abs {o.max_abs:.3g} = {o.relative:.3%} of its scale {o.scale:.3g}")
    emit(f"  pass (max error {result.max_error:.2%} of the scale)")
