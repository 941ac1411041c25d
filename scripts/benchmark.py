"""Benchmark the shipped model every way it can run, in one process, and write the table the README shows.

    .venv/bin/python scripts/benchmark.py [--seconds 2] [--threads 1]

Contenders (batch 1 and 256, one thread each unless --threads): the floor (the bare fused LSTM node), the
edgeattn Predictor on models/seed.onnx, the same file through a bare InferenceSession.run, the straight
tf2onnx export (no edgeattn clean-up), the int8 and fp16
files from `edgeattn quantize`, LiteRT with XNNPACK, the Keras model under tf.function, and Keras eager.
Writes docs/benchmark.md and replaces the table between the benchmark markers in README.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"
START, END = "<!-- benchmark:start -->", "<!-- benchmark:end -->"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=2.0, help="timing budget per contender and batch")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-readme", action="store_true", help="write docs/benchmark.md only")
    args = parser.parse_args()

    import onnx
    import tensorflow as tf

    from edgeattn import bench, export, ortformat, quantize
    from edgeattn.loading import load_model

    keras_file, onnx_file = MODELS / "seed.keras", MODELS / "seed.onnx"
    with tempfile.TemporaryDirectory(prefix="edgeattn-bench-") as tmp:
        tmp = Path(tmp)
        print("preparing: straight tf2onnx export, int8, fp16, .ort, .tflite", flush=True)
        keras_model = load_model(keras_file).model
        straight = tmp / "straight.onnx"
        onnx.save(export.convert(keras_model), straight)
        int8, fp16 = tmp / "seed.int8.onnx", tmp / "seed.fp16.onnx"
        quantize.quantize(onnx_file, int8, "int8")
        quantize.quantize(onnx_file, fp16, "fp16")
        ort_bytes, _ = ortformat.to_ort(onnx.load(onnx_file), "seed")
        spec = tf.TensorSpec((1, *keras_model.inputs[0].shape[1:]), tf.float32)
        tflite = bench.litert_bytes(tf.function(lambda t: keras_model(t, training=False)), spec)
        sizes = {
            "Keras (.keras)": keras_file.stat().st_size,
            "ONNX, edgeattn export": onnx_file.stat().st_size,
            "ONNX, straight tf2onnx export": straight.stat().st_size,
            "ONNX, int8 weights": int8.stat().st_size,
            "ONNX, fp16 weights": fp16.stat().st_size,
            "ORT format (.ort)": len(ort_bytes),
            "LiteRT (.tflite)": len(tflite),
        }
        nodes = {
            "straight": len(onnx.load(straight).graph.node),
            "edgeattn": len(onnx.load(onnx_file).graph.node),
        }
        report = bench.run(
            onnx_file,
            batches=(1, 256),
            threads=args.threads,
            keras_source=keras_file,
            litert=True,
            eager=True,
            others={
                "edgeattn export, bare InferenceSession.run": onnx_file,
                f"straight tf2onnx export ({nodes['straight']} nodes)": straight,
                "int8 weights (DequantizeLinear)": int8,
                "fp16 weights (Cast)": fp16,
            },
            seconds=args.seconds,
            progress=lambda text: print(text, flush=True),
        )
    table = render(report, sizes, nodes)
    (ROOT / "docs").mkdir(exist_ok=True)
    (ROOT / "docs" / "benchmark.md").write_text(table)
    print(table)
    if not args.no_readme:
        readme = (ROOT / "README.md").read_text()
        if START in readme and END in readme:
            head, rest = readme.split(START, 1)
            _, tail = rest.split(END, 1)
            (ROOT / "README.md").write_text(f"{head}{START}\n{table}{END}{tail}")
            print("README.md: benchmark table replaced", file=sys.stderr)


def render(report, sizes: dict[str, int], nodes: dict[str, int]) -> str:
    from edgeattn.bench import FLOOR, PREDICTOR

    order = [
        FLOOR,
        PREDICTOR,
        *[r.name for r in report.rows if r.name.startswith(("edgeattn export", "straight", "int8", "fp16"))],
        "LiteRT (XNNPACK)",
        "Keras under tf.function",
        "Keras eager",
    ]
    names = list(dict.fromkeys(n for n in order if any(r.name == n for r in report.rows)))
    lines = [
        f"Shipped model (`models/seed.onnx`, {nodes['edgeattn']} nodes; time {report.time_steps}, features 1, "
        f"LSTM 64, attention 32, Dense 1), {report.threads} thread(s), all in one process, contenders taking "
        f"turns. Machine: {report.machine}.",
        "",
        "| contender | batch 1 p50 (us) | batch 1 p99 (us) | x floor | batch 256 p50 (us) | samples/s at 256 | x floor |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name in names:
        one, many = report.row(name, 1), report.row(name, 256)
        lines.append(
            f"| {name} | {one.p50_us:,.1f} | {one.p99_us:,.1f} | {one.x_floor:.2f} | {many.p50_us:,.0f} | "
            f"{many.samples_per_s:,.0f} | {many.x_floor:.2f} |"
        )
    lines += ["", "| file | bytes |", "| --- | ---: |"]
    lines += [f"| {name} | {size:,} |" for name, size in sizes.items()]
    lines.append("\n" + "; ".join(f"{name}: {what}" for name, what in report.notes.items()) + ".")
    for name, why in report.skipped.items():
        lines.append(f"\n{name} was skipped: {why}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
