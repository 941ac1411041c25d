"""Cold start, side by side: a new process that imports, loads the model and predicts once.

    .venv/bin/python scripts/cold_start.py [--runs 5]

edgeattn: numpy + onnxruntime, Predictor(models/seed.onnx).predict(x).
TensorFlow: keras.saving.load_model(models/seed.keras) then model.predict(x).
The two kinds of process alternate, so both see the same machine state; medians are printed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MEASURE = """
import resource, time, sys
t0 = time.perf_counter()
import numpy as np
x = np.random.default_rng(0).random((1, 10, 1), dtype=np.float32)
{body}
t1 = time.perf_counter()
print(t1 - t0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""
EDGEATTN = "from edgeattn.runtime import Predictor\nPredictor(sys.argv[1] + '/seed.onnx').predict(x)"
TENSORFLOW = (
    "import os; os.environ['TF_CPP_MIN_LOG_LEVEL'] = '3'\nimport keras, edgeattn.convert.layers\n"
    "keras.saving.load_model(sys.argv[1] + '/seed.keras').predict(x, verbose=0)"
)


def run(body: str) -> tuple[float, float]:
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", MEASURE.format(body=body), str(ROOT / "models")],
        capture_output=True,
        text=True,
        check=True,
    )
    wall = time.perf_counter() - start
    _inside, rss_mb = map(float, out.stdout.split())
    return wall, rss_mb


def measure(runs: int = 5) -> dict:
    results = {"edgeattn": [], "tensorflow": []}
    for _ in range(runs):
        results["edgeattn"].append(run(EDGEATTN))
        results["tensorflow"].append(run(TENSORFLOW))
    summary = {
        name: {
            "wall_s": statistics.median(w for w, _ in rows),
            "max_rss_mb": statistics.median(m for _, m in rows),
        }
        for name, rows in results.items()
    }
    summary["speedup"] = summary["tensorflow"]["wall_s"] / summary["edgeattn"]["wall_s"]
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    s = measure(args.runs)
    if args.json:
        print(json.dumps(s))
        return
    print(f"cold start (new process: import, load, first prediction; median of {args.runs}, alternating):")
    for name in ("edgeattn", "tensorflow"):
        print(f"  {name:<11} {s[name]['wall_s']:6.2f} s  {s[name]['max_rss_mb']:6.0f} MB peak RSS")
    print(f"  edgeattn starts {s['speedup']:.1f}x faster")


if __name__ == "__main__":
    main()
