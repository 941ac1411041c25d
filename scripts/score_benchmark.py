"""`edgeattn score` throughput: 1,000,000 seed-model samples in 8 parquet files, scored on a local Ray cluster with
1 and 2 workers, and by the plain Predictor in one process (reading the same files), side by side.

    .venv/bin/python scripts/score_benchmark.py [--samples 1000000] [--files 8]

Prints, per contender, the wall time (Ray's start-up separately), samples per second and the ratio to the
single process. Data and outputs go to a temporary folder. Needs the [ray] extra.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from edgeattn.deploy.score import score
from edgeattn.runtime import Predictor

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "models" / "seed.onnx"


def make_data(folder: Path, samples: int, files: int) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for i, n in enumerate(np.array_split(np.arange(samples), files)):
        x = rng.random((len(n), 10, 1), dtype=np.float32)
        inner = pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), 1)
        column = pa.ListArray.from_arrays(pa.array(np.arange(0, len(n) * 10 + 1, 10, dtype=np.int32)), inner)
        paths.append(folder / f"part-{i}.parquet")
        pq.write_table(pa.table({"x": column}), paths[-1])
    return paths


def single_process(paths: list[Path], batch_size: int) -> float:
    """Read each file and score it with one Predictor (1 thread), writing y like score does."""
    predictor = Predictor(MODEL, threads=1, batch_size=batch_size)
    start = time.perf_counter()
    for path in paths:
        column = pq.read_table(path).column("x").combine_chunks()
        x = np.asarray(column.flatten().flatten().to_numpy(), np.float32).reshape(len(column), 10, 1)
        y = predictor.predict(x)
        pq.write_table(pa.table({"y": y[:, 0]}), path.with_suffix(".y.parquet"))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--samples", type=int, default=1_000_000)
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=4096)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        paths = make_data(folder, args.samples, args.files)
        size = sum(p.stat().st_size for p in paths)
        print(f"{args.samples:,} seed-model samples in {args.files} parquet files ({size / 1e6:.1f} MB)")
        rows = []
        seconds = single_process(paths, args.batch_size)
        rows.append(("one process, Predictor (1 thread)", 0.0, seconds))
        for workers in (1, 2):
            start = time.perf_counter()
            result = score(
                MODEL, paths, folder / f"out-{workers}", batch_size=args.batch_size, workers=workers
            )
            total = time.perf_counter() - start
            rows.append((f"edgeattn score, Ray local, {workers} worker(s)", result.startup_seconds, total))
            rows.append(("  of which scoring (after Ray started)", 0.0, result.seconds))
    base = args.samples / rows[0][2]
    print(f"{'contender':<46} {'start s':>8} {'total s':>8} {'samples/s':>11} {'x one process':>14}")
    for name, startup, total in rows:
        rate = args.samples / total
        print(f"{name:<46} {startup:>8.1f} {total:>8.1f} {rate:>11,.0f} {rate / base:>14.2f}")


if __name__ == "__main__":
    main()
