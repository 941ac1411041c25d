"""Benchmark the shipped model and the fixtures every way they run; write the tables docs/speed.md shows.

    .venv/bin/pip install '.[litert]'     # ai-edge-litert, for the LiteRT rows (else TensorFlow's interpreter)
    .venv/bin/python scripts/benchmark.py [--seconds 2] [--threads 1] [--output docs/benchmark.md] [--no-page]

Seed model (models/seed.onnx), batch 1 and 256: the floor (the bare fused LSTM node, fed what reaches it), the
edgeattn Predictor, the same file through a bare InferenceSession.run, the straight tf2onnx export (no edgeattn
clean-up), the Predictor on the int8 and fp16 files of `edgeattn quantize` (weights folded at load, and the
int8 file's stored graph with fold_weights=False), LiteRT with XNNPACK, the Keras model under tf.function and
Keras eager. Then the memory of a process after loading each file, and the files' bytes.

Transformer fixtures (tests/fixtures/edge/ts-block1.keras, mha-conv4.keras, k3-layernorm.keras,
tests/fixtures/keras2/k2-transformer.h5, k2-user-transformer.h5; no recurrent node, so no floor) and recurrent
fixtures (tests/fixtures/keras2/k2-attention.h5, k2-cudnn-gru.h5, k2-mha-bilstm.h5; with a floor): the Predictor
on the edgeattn export (with and without onnxruntime's fused kernels), the straight tf2onnx export, LiteRT and
tf.function, batch 1 and 256.

Every contender runs with the same thread count (TensorFlow and LiteRT in a child process that sets it before
TensorFlow starts); each table says the count in effect per contender. Writes --output (default
docs/benchmark.md) and, unless --no-page, replaces the text between the benchmark markers in docs/speed.md (the
README's headline figures are copied from there by hand).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"
FIXTURES = ROOT / "tests" / "fixtures"
START, END = "<!-- benchmark:start -->", "<!-- benchmark:end -->"
# name: (file under tests/fixtures, the author's layer files, time steps for a free time axis)
TRANSFORMERS = {
    "ts-block1": ("edge/ts-block1.keras", (), None),
    "mha-conv4": ("edge/mha-conv4.keras", (), None),
    "k3-layernorm": ("edge/k3-layernorm.keras", (), 16),
    "k2-transformer": ("keras2/k2-transformer.h5", (), None),
    "k2-user-transformer": ("keras2/k2-user-transformer.h5", (FIXTURES / "keras2" / "user_layers.py",), 12),
}
RECURRENT = {
    "k2-attention": ("keras2/k2-attention.h5", (), None),
    "k2-cudnn-gru": ("keras2/k2-cudnn-gru.h5", (), None),
    "k2-mha-bilstm": ("keras2/k2-mha-bilstm.h5", (), None),
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=2.0, help="timing budget per contender and batch")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batches", default="1,256", help="batch sizes, comma-separated")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "benchmark.md")
    parser.add_argument("--no-page", action="store_true", help="write --output only, not docs/speed.md")
    parser.add_argument("--only", choices=["seed", "transformers", "recurrent"], help="one part only")
    args = parser.parse_args()
    batches = tuple(int(b) for b in args.batches.split(","))
    say = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731

    with tempfile.TemporaryDirectory(prefix="edgeattn-bench-") as tmp:
        parts = []
        if args.only in (None, "seed"):
            parts.append(seed_section(Path(tmp), args, batches, say))
        if args.only in (None, "transformers"):
            parts.append(fixture_section(Path(tmp), args, batches, say, TRANSFORMER_INTRO, TRANSFORMERS))
        if args.only in (None, "recurrent"):
            parts.append(fixture_section(Path(tmp), args, batches, say, RECURRENT_INTRO, RECURRENT))
    text = "\n".join(parts)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print(text)
    if not args.no_page:
        page = ROOT / "docs" / "speed.md"
        text_now = page.read_text()
        if START in text_now and END in text_now:
            head, rest = text_now.split(START, 1)
            _, tail = rest.split(END, 1)
            page.write_text(f"{head}{START}\n{text}{END}{tail}")
            say("docs/speed.md: benchmark tables replaced")


def _straight(keras_model, path: Path) -> int:
    """The straight tf2onnx export (no edgeattn clean-up); returns its node count."""
    import onnx

    from edgeattn.convert import export

    proto = export.convert(keras_model)
    onnx.save(proto, path)
    return len(proto.graph.node)


def seed_section(tmp: Path, args, batches, say) -> str:
    import onnx

    from edgeattn.convert.loading import load_model
    from edgeattn.deploy import bench, quantize
    from edgeattn.runtime import Predictor

    keras_file, onnx_file = MODELS / "seed.keras", MODELS / "seed.onnx"
    say("seed model: straight tf2onnx export, int8, fp16, .tflite")
    straight = tmp / "seed.straight.onnx"
    straight_nodes = _straight(load_model(keras_file).model, straight)
    int8, fp16 = tmp / "seed.int8.onnx", tmp / "seed.fp16.onnx"
    quantize.quantize(onnx_file, int8, "int8")
    quantize.quantize(onnx_file, fp16, "fp16")
    threads = args.threads
    report = bench.run(
        onnx_file,
        batches=batches,
        threads=threads,
        keras_source=keras_file,
        litert=True,
        eager=True,
        others={
            "edgeattn export, bare InferenceSession.run": onnx_file,
            f"straight tf2onnx export ({straight_nodes} nodes), bare run": straight,
        },
        predictors={
            "Predictor, int8 file (folded at load)": Predictor(int8, providers=["cpu"], threads=threads),
            "Predictor, fp16 file (folded at load)": Predictor(fp16, providers=["cpu"], threads=threads),
            "Predictor, int8 file, fold_weights=False": Predictor(
                int8, providers=["cpu"], threads=threads, fold_weights=False
            ),
        },
        seconds=args.seconds,
        progress=say,
    )
    nodes = len(onnx.load(onnx_file).graph.node)
    lines = [
        "### The shipped model",
        "",
        f"`models/seed.onnx` ({nodes} nodes; time {report.time_steps}, features 1, LSTM 64, attention 32, "
        f"Dense 1). {args.threads} intra-op thread(s) asked of every contender; the threads column is the "
        "count in effect (onnxruntime: read back from the session; TensorFlow: from tf.config in the child "
        "process that set it before TensorFlow started; LiteRT: given to the interpreter). Contenders take "
        f"turns in {bench.ROUNDS} rounds; x columns are per-round ratios of p50, median (lowest-highest). "
        f"Machine: {report.machine}.",
        "",
        *table(report, ["floor", "Predictor"]),
        "",
        *memory_table({"float (edgeattn export)": onnx_file, "int8": int8, "fp16": fp16}, say),
        "",
        *notes(report),
    ]
    return "\n".join(lines) + "\n"


def table(report, refs: list[str]) -> list[str]:
    """The report as a Markdown table, with the ratio columns of ``refs`` (references present in it)."""
    refs = [ref for ref in refs if ref in report.references]
    batches = sorted({r.batch for r in report.rows})
    names = list(dict.fromkeys(r.name for r in report.rows))
    head = ["contender", "threads"]
    for b in batches:
        head += [f"b{b} p50 (us)"] + [f"b{b} x {ref}" for ref in refs]
    head.append(f"samples/s at {batches[-1]}")
    head.append("max abs vs Predictor")
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" + " ---: |" * (len(head) - 1)]
    for name in names:
        rows = [report.row(name, b) for b in batches]  # None where a contender did not run at that batch
        present = [row for row in rows if row is not None]
        cells = [name, str(present[0].threads or "auto")]
        for row in rows:
            cells.append(f"{row.p50_us:,.1f}" if row else "-")
            cells += [str(row.x.get(ref, "-")) if row else "-" for ref in refs]
        cells.append(f"{rows[-1].samples_per_s:,.0f}" if rows[-1] else "-")
        agree = [r.max_abs_vs_predictor for r in present if r.max_abs_vs_predictor is not None]
        cells.append(f"{max(agree):.1e}" if agree else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def notes(report) -> list[str]:
    lines = [f"{name}: {what}." for name, what in report.notes.items()]
    lines += [f"{name} was skipped: {why}." for name, why in report.skipped.items()]
    return lines


def memory_table(files: dict[str, Path], say) -> list[str]:
    """Resident memory of a fresh process after importing onnxruntime, and after loading each file."""
    say("memory after load: one fresh process per file")
    probe = (
        "import sys\n"
        "def rss():\n"
        "    return next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmRSS'))\n"
        "import numpy, onnxruntime\n"
        "from edgeattn.runtime import Predictor\n"
        "before = rss()\n"
        "p = Predictor(sys.argv[1], providers=['cpu'], threads=1, fold_weights=sys.argv[2] == '1')\n"
        "print(before, rss())\n"
    )
    lines = [
        "| file | bytes | RSS after import (KiB) | RSS after load (KiB) | load adds (KiB) |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    runs = [(name, path, "1") for name, path in files.items()]
    runs += [(f"{name}, fold_weights=False", path, "0") for name, path in files.items() if name == "int8"]
    for name, path, fold in runs:
        # -P and a private working folder: `-c` would put the working folder first on sys.path
        with tempfile.TemporaryDirectory(prefix="edgeattn-probe-") as cwd:
            done = subprocess.run([sys.executable, "-P", "-c", probe, str(path.resolve()), fold],
                                  capture_output=True, text=True, cwd=cwd)  # fmt: skip
        before, after = (int(v) for v in done.stdout.split())
        size = path.stat().st_size
        lines.append(f"| {name} | {size:,} | {before:,} | {after:,} | {after - before:,} |")
    return lines


TRANSFORMER_INTRO = (
    "### Transformer models (MultiHeadAttention, no recurrent node)",
    "Fixtures of the test suite in common public shapes (tests/fixtures/edge, made by "
    "scripts/make_edge_transformer_fixtures.py: a one-block time-series transformer, four MultiHeadAttention + "
    "Conv1D blocks as in Keras' time-series example, a Keras 3 token transformer with every LayerNormalization "
    "form) and the Keras 2 fixtures, exported with edgeattn. No recurrent node, so no floor: the x columns are "
    "ratios to edgeattn's Predictor, to the Keras model under tf.function and to LiteRT with XNNPACK, same "
    "inputs. `Predictor, fuse_for_runtime=False` runs the stored standard graph without onnxruntime's own fused "
    "kernels (edgeattn.graphs.ortfusion).",
)
RECURRENT_INTRO = (
    "### Recurrent models with attention (Keras 2 files)",
    "Keras 2 fixtures of the test suite: the floor is each model's recurrent node(s) alone, writing what the "
    "model reads from them.",
)


def fixture_section(tmp: Path, args, batches, say, intro: tuple[str, str], fixtures: dict) -> str:
    import onnx

    from edgeattn.convert.export import ExportOptions, export
    from edgeattn.convert.loading import load_model
    from edgeattn.deploy import bench
    from edgeattn.runtime import Predictor

    title, text = intro
    lines = [title, "", f"{text} {args.threads} intra-op thread(s) asked of every contender.", ""]
    last_notes: list[str] = []
    for name, (file, layers, steps) in fixtures.items():
        source = FIXTURES / file
        say(f"{name}: export, straight tf2onnx export")
        exported = tmp / f"{name}.onnx"
        export(source, exported, ExportOptions(custom_layers=tuple(map(str, layers)), golden=False))
        straight = tmp / f"{name}.straight.onnx"
        straight_nodes = _straight(load_model(source, custom_layers=layers).model, straight)
        proto = onnx.load(exported)
        unfused = Predictor(exported, providers=["cpu"], threads=args.threads, fuse_for_runtime=False)
        report = bench.run(
            exported,
            batches=batches,
            threads=args.threads,
            keras_source=source,
            litert=True,
            others={f"straight tf2onnx export ({straight_nodes} nodes), bare run": straight},
            predictors={"Predictor, fuse_for_runtime=False": unfused},
            seconds=args.seconds,
            time_steps=steps,
            progress=say,
            custom_layers=tuple(map(str, layers)),
        )
        refs = ["floor", "Predictor", "tf.function", "LiteRT"]
        lines += [
            f"`{file}`: edgeattn export {len(proto.graph.node)} nodes; time {report.time_steps}.",
            "",
            *table(report, refs),
            "",
        ]
        last_notes = notes(report)
    lines += last_notes
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
