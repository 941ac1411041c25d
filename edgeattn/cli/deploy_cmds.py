"""The commands that put an ONNX model to work at scale or measure it: bench, score, web."""

from __future__ import annotations

from pathlib import Path

import click

from edgeattn.cli.options import (
    CONTEXT,
    attention_option,
    custom_layers_option,
    force_option,
    json_file_option,
    keras_option,
    model_argument,
    output_option,
    parse_ints,
)
from edgeattn.cli.render import emit, stage_progress, write_json
from edgeattn.core import defaults
from edgeattn.core.errors import InputError

# -- bench ------------------------------------------------------------------------------------------------


@click.command(context_settings=CONTEXT, short_help="Latency and throughput, contenders side by side.")
@model_argument
@keras_option("Also time this Keras source (tf.function).")
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
    "--stream",
    is_flag=True,
    help="Time streaming instead, batch 1: a step model's Stream.push against one run of the whole window on "
    "--full FULL, or a whole-window model's Window(T).push against predict on the window.",
)
@click.option(
    "--full",
    type=click.Path(path_type=Path),
    help="With --stream and a step model: the whole-window model to compare a step with.",
)
@click.option(
    "--steps",
    type=click.IntRange(1, 100_000),
    help="With --stream: the window's length where no model fixes it.  [default: 50]",
)
@json_file_option("Also write the results as JSON (with --profile, every kernel under 'profile').")
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
    stream: bool,
    full: Path | None,
    steps: int | None,
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
      edgeattn bench step.onnx --stream --full model.onnx --steps 50   # a step against the whole window
      edgeattn bench models/seed.onnx --stream                         # Window(10).push against predict
    """
    from edgeattn.deploy import bench as bench_lib

    if stream or full or steps:
        from edgeattn.deploy import streambench

        source = click.get_current_context().get_parameter_source
        flags = {"keras_src": "--keras", "eager": "--eager", "litert": "--litert", "batches": "--batch",
                 "time_steps": "--time", "keep_quantized": "--no-fold-weights", "stored_graph": "--no-fuse-for-runtime",
                 "profile": "--profile", "custom_layers": "--custom-layers"}  # fmt: skip
        given = [flag for name, flag in flags.items() if source(name).name != "DEFAULT"]
        if not stream or given:
            why = f"{', '.join(given)}: not with --stream (batch 1, the default Predictor)" if stream else (
                "--full and --steps go with --stream")  # fmt: skip
            raise InputError(why, hint="see `edgeattn bench --help`")
        report = streambench.run(
            model, full, steps, threads=threads, seconds=seconds, progress=stage_progress()
        )
        for line in report.lines():
            emit(line)
        return write_json(json_file, report.to_dict())
    if (eager or litert) and keras_src is None:
        raise InputError("--eager and --litert time the Keras source: give it with --keras SRC")
    report = bench_lib.run(
        model,
        batches=parse_ints(batches),
        threads=threads,
        keras_source=keras_src,
        litert=litert,
        eager=eager,
        seconds=seconds,
        time_steps=time_steps,
        progress=stage_progress(),
        custom_layers=custom_layers,
        fold_weights=not keep_quantized,
        fuse_for_runtime=not stored_graph,
    )
    steps = f"time {report.time_steps}" if report.time_steps else "no time axis"
    emit(f"{model}: {steps}, {threads} thread(s) asked; {report.machine}")
    refs = report.references
    head = f"{'contender':<34} {'threads':>7} {'batch':>5} {'p50 us':>11} {'p99 us':>11} {'samples/s':>12}"
    emit(head + "".join(f" {'x ' + ref:>18}" for ref in refs) + f" {'vs Predictor':>12}")
    for r in report.rows:
        agree = f"{r.max_abs_vs_predictor:.1e}" if r.max_abs_vs_predictor is not None else "-"
        emit(
            f"{r.name:<34} {r.threads if r.threads else 'auto':>7} {r.batch:>5} {r.p50_us:>11,.1f} "
            f"{r.p99_us:>11,.1f} {r.samples_per_s:>12,.0f}"
            + "".join(f" {r.x[ref]!s:>18}" for ref in refs)
            + f" {agree:>12}"
        )
    for name, what in report.notes.items():
        emit(f"{name}: {what}")
    for name, why in report.skipped.items():
        emit(f"skipped {name}: {why}")
    data = report.to_dict()
    if profile:
        from edgeattn.deploy import profile as profile_lib

        profiles = profile_lib.profile(
            model,
            batches=parse_ints(batches),
            threads=threads,
            seconds=seconds,
            time_steps=time_steps,
            fold_weights=not keep_quantized,
            fuse_for_runtime=not stored_graph,
            progress=stage_progress(),
        )
        for one in profiles:
            emit()
            for line in profile_lib.table(one):
                emit(line)
        data["profile"] = [one.to_dict() for one in profiles]
    write_json(json_file, data)


# -- score ----------------------------------------------------------------------------------------------


@click.command(context_settings=CONTEXT, short_help="Score data sets on Ray (a local cluster by default).")
@model_argument
@click.argument("data", nargs=-1, required=True)
@output_option("The folder to write.", folder=True)
@attention_option("Also write the attention weights (column attention_weights).")
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
    from edgeattn.deploy import score as score_lib

    result = score_lib.score(
        model,
        data,
        output,
        attention=attention,
        batch_size=batch_size,
        workers=workers,
        address=address,
        force=force,
        progress=stage_progress(),
    )
    for f in result.files:
        emit(f"  {f.path} -> {result.out_dir / f.output}: {f.rows:,} rows")
    emit(
        f"scored {result.rows:,} rows in {result.seconds:.2f} s ({result.samples_per_s:,.0f} samples/s) on "
        f"{result.workers} worker(s), Ray {result.address} (started in {result.startup_seconds:.1f} s); "
        f"wrote {result.out_dir}/manifest.json"
    )


# -- web ------------------------------------------------------------------------------------------------


@click.command(context_settings=CONTEXT, short_help="A static web page that runs the model in the browser.")
@model_argument
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
    from edgeattn.deploy import web as web_lib

    site = web_lib.build(model, output, ort_web=ort_web, force=force)
    where = "copied into ort/" if site.ort_source == "local" else f"from {site.ort_source} (pinned, SRI)"
    emit(f"wrote {site.path}/: {', '.join(site.files)} ({site.size_bytes:,} bytes); onnxruntime-web {where}")
    if not serve:
        emit(f"serve it with: edgeattn web {model} -o {output} --force --serve   (or any static web server)")
        return
    httpd = web_lib.server(site.path, port)
    emit(f"serving {site.path} on http://127.0.0.1:{httpd.server_address[1]}/ (Ctrl-C stops)")
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        emit("stopped")
    finally:
        httpd.server_close()
