"""The commands of the Keras side: train a model, export it to ONNX, verify the two agree."""

from __future__ import annotations

from pathlib import Path

import click

from edgeattn.cli.common import checked_predictor, quiet_tensorflow
from edgeattn.cli.options import (
    CONTEXT,
    atol_option,
    custom_layers_option,
    force_option,
    input_spec_option,
    inputs_option,
    json_file_option,
    keras_option,
    max_params_option,
    model_argument,
    output_option,
    parse_ints,
    rtol_option,
    seed_option,
    unsafe_option,
)
from edgeattn.cli.render import emit, format_shape, stage_progress, write_json
from edgeattn.core import defaults
from edgeattn.core.errors import CheckFailedError, InputError

# -- train ------------------------------------------------------------------------------------------------


@click.command(context_settings=CONTEXT, short_help="Train a model on a synthetic task.")
@click.option(
    "--task",
    type=click.Choice(["find-max", "kernel-regression"]),
    default=defaults.TASK,
    show_default=True,
    help="Synthetic task to train on.",
)
@click.option("--epochs", type=click.IntRange(1, 10_000), default=defaults.EPOCHS, show_default=True)
@seed_option("Seed for data and weights.")
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

    from edgeattn.core.files import check_writable, write_atomic

    if output.suffix != ".keras":
        raise InputError(f"{output}: the model is saved in Keras 3 format and must end in .keras")
    check_writable(output, force)
    quiet_tensorflow()
    from edgeattn.convert import tasks

    def progress(epoch: int, total: int, logs: dict) -> None:
        parts = "  ".join(
            f"{k} {v:.4f}" for k, v in logs.items() if isinstance(v, float) and k != "learning_rate"
        )
        emit(f"epoch {epoch:>{len(str(total))}}/{total}  {parts}", err=True)

    what = "50 pairs" if task == "kernel-regression" else f"{samples} samples"
    emit(f"training on {task}: {what}, {epochs} epochs, seed {seed}", err=True)
    result = tasks.train(task, epochs=epochs, seed=seed, n_train=samples, on_epoch=progress)
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / "model.keras"
        result.model.save(staged)
        write_atomic(output, staged.read_bytes(), force=force)
    emit(
        f"validation MAE {result.val_mae:.4f} (always predicting the mean: {result.baseline_mae:.4f}); "
        f"trained in {result.seconds:.1f} s"
    )
    if task == "kernel-regression":
        bandwidth = float(result.model.get_layer("nadaraya_watson").get_weights()[0][0])
        emit(f"learned bandwidth w = {bandwidth:.4f} (started at 1.0)")
    emit(f"saved {output} ({output.stat().st_size:,} bytes)")


# -- export -----------------------------------------------------------------------------------------------


@click.command(context_settings=CONTEXT, short_help="Keras (.keras/.h5/SavedModel) -> checked, plain ONNX.")
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
@atol_option("Parity tolerance: the max abs error every tensor may have, plus --rtol times its scale.")
@rtol_option
@click.option("--no-golden", is_flag=True, help="Do not store the reference inputs/outputs in the model.")
@click.option(
    "--streaming",
    is_flag=True,
    help="Write the step model: one time step and the carried state in, that step's outputs and the new state "
    "out (inputs and outputs named after their layers: lstm/h, lstm/h_next). Only for causal models: "
    "LSTM/GRU/SimpleRNN, Dense per step, Conv1D(padding='causal'), attention called with use_causal_mask=True.",
)
@click.option(
    "--max-steps",
    type=click.IntRange(2, 1_000_000),
    default=None,
    help="With --streaming: the most steps a causal attention attends to (its key/value cache).  [default: 256]",
)
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
    streaming: bool,
    max_steps: int | None,
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
    A model with stateful=True layers, and the step model (--streaming), are checked as streams instead:
    seeded sequences fed one step (a stateful model: one chunk) at a time from zero state, against Keras on
    the whole sequence at every step.
    Example:
      edgeattn export model.keras -o model.onnx
      edgeattn export model.keras -o model.onnx --attention-weights --force
      edgeattn export model.h5 -o model.ort      # for a minimal onnxruntime build
      edgeattn export model.h5 -o model.onnx --custom-layers my_layers.py   # your own layer classes
      edgeattn export model.h5 -o model.onnx --attention-weights=mha        # one of several attention layers
      edgeattn export my_model/ -o model.onnx     # a SavedModel folder (saved_model.pb, variables/)
      edgeattn export sub.h5 -o model.onnx --custom-layers my_model.py --input-spec "x:float32[batch,10,1]"
      edgeattn export causal.keras -o step.onnx --streaming   # one time step a run, the state carried
    """
    quiet_tensorflow()
    from edgeattn.convert.export import ExportOptions
    from edgeattn.convert.export import export as run_export

    if max_steps is not None and not streaming:
        raise click.UsageError("--max-steps is for a step model: add --streaming")

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
        streaming=streaming,
        max_steps=max_steps or ExportOptions.max_steps,
    )
    result = run_export(src, output, options, progress=stage_progress())
    s = result.summary
    ops = ", ".join(f"{k} {v}" for k, v in s.op_histogram.items())
    emit(f"exported {src} -> {result.path} in {result.seconds:.1f} s")
    emit(f"  graph   {s.nodes} nodes (opset {s.opset}, domains {', '.join(s.domains)}): {ops}")
    emit(f"  size    {result.size_bytes:,} bytes, {s.parameters:,} parameters")
    for name, shape, dtype in s.inputs:
        emit(f"  input   {name} {format_shape(shape)} {dtype}")
    for name, shape, dtype in s.outputs:
        emit(f"  output  {name} {format_shape(shape)} {dtype}")
    if result.stream:
        states = result.stream["states"]
        shown = ", ".join(s["input"] for s in states[:6]) + (", ..." if len(states) > 6 else "")
        how = "one time step a run" if result.stream["kind"] == "step" else "a chunk of steps a run"
        count = f"{len(states)} state{'s' if len(states) != 1 else ''} carried"
        emit(f"  stream  {result.stream['kind']} model ({how}), {count}: {shown}")
    emit(
        f"  parity  max abs error {result.parity.max_abs:.2e} over {result.parity.inputs} "
        f"(atol {atol:g} + rtol {rtol:g} * each tensor's scale): pass"
    )
    if result.ort_max_abs is not None:
        from edgeattn.graphs.ortformat import config_path

        emit(f"  ORT     same outputs as the ONNX graph (max abs difference {result.ort_max_abs:.2g})")
        emit(f"  ops     {config_path(result.path)} (for a minimal onnxruntime build)")


# -- verify -----------------------------------------------------------------------------------------------


@click.command(context_settings=CONTEXT, short_help="Prove the ONNX model computes what Keras computes.")
@model_argument
@keras_option(
    "The Keras source (.keras/.h5/SavedModel folder). Default: the source recorded in the model's metadata."
)
@click.option(
    "--golden",
    is_flag=True,
    help="Check the reference outputs stored in the model, with onnxruntime alone (no TensorFlow).",
)
@inputs_option("Inputs to use (.npy/.npz).")
@click.option("--batches", default=None, help="Batch sizes of the seeded inputs.  [default: 1,7,N]")
@click.option(
    "--samples",
    type=click.IntRange(1, 100_000),
    default=defaults.VERIFY_SAMPLES,
    show_default=True,
    help="Samples in the largest seeded batch (N).",
)
@click.option(
    "--lengths",
    default=None,
    help="Time lengths to try where the time axis is free (a stream model: steps it is fed one at a time).  "
    "[default: 1,5,10,30; a stream model: 1,10,200]",
)
@atol_option("Absolute tolerance of every tensor.")
@rtol_option
@seed_option("Seed of the random inputs.")
@json_file_option("Also write the report as JSON ('-' for stdout).")
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
    quiet_tensorflow()
    from edgeattn.convert import verify as verify_lib

    notes = []
    if keras_src is None:
        keras_src, note = verify_lib.find_source(model)
        notes.append(note)
    report = verify_lib.verify_against_keras(
        model,
        keras_src,
        batches=parse_ints(batches) if batches else (*defaults.VERIFY_BATCHES[:-1], samples),
        lengths=parse_ints(lengths) if lengths else None,
        atol=atol,
        rtol=rtol,
        inputs_file=inputs_file,
        seed=seed,
        unsafe=unsafe,
        custom_layers=custom_layers,
        layers=not outputs_only,
    )
    for note in notes:
        emit(note)
    emit(f"{model} vs {keras_src}: {report.inputs}; {report.provider}")
    emit(
        f"{'output':<20} {'max abs':>10} {'tolerance':>10} {'scale':>10} {'max rel':>10} {'mean abs':>10}  "
        f"{'worst':<24} result"
    )
    for o in report.outputs:
        emit(_parity_row(o.name, o))
    if report.layers:
        emit(f"{'layer (every output of each, in order)':<40}")
        first = report.first_divergent_layer
        for o in report.layers:
            mark = "  <- diverges first" if o is first else ""
            emit(_parity_row(f"  {o.name}", o) + mark)
    for problem in report.structure_problems:
        emit(f"structure: {problem}")
    write_json(json_file, report.to_dict())
    if not report:
        raise CheckFailedError(f"verify failed: {report.failures()[0]}")
    emit(f"verify: pass (atol {atol:g}, rtol {rtol:g})")


def _parity_row(name: str, o) -> str:
    worst = f"{o.worst_case} #{o.worst_sample}"
    return (
        f"{name:<20} {o.max_abs:>10.3g} {o.tol:>10.3g} {o.scale:>10.3g} {o.max_rel:>10.3g} {o.mean_abs:>10.3g}  "
        f"{worst:<24} "
        f"{'pass' if o.passed else 'FAIL'}"
    )


def _verify_golden(model: Path, json_file: Path | None) -> None:
    predictor = checked_predictor(model)
    try:
        result = predictor.self_check()
    except ValueError as exc:
        stream = "edgeattn.stream" in predictor.metadata  # a step's outputs depend on the state carried to it
        hint = f"a stream model is checked by stepping it: edgeattn verify {model}" if stream else None
        raise InputError(str(exc), hint=hint or "re-export without --no-golden") from None
    emit(f"{model}: stored reference outputs re-run with onnxruntime ({predictor.providers[0]})")
    for name, r in result["outputs"].items():
        emit(
            f"{name:<20} max abs {r['max_abs']:.3g} (atol {r['atol']:g}) {'pass' if r['passed'] else 'FAIL'}"
        )
    write_json(json_file, result)
    if not result["passed"]:
        raise CheckFailedError("verify --golden failed: the model no longer computes the stored outputs")
    emit("verify --golden: pass")
