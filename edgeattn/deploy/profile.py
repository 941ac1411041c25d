"""onnxruntime's own per-kernel profile of the Predictor's session (``edgeattn bench --profile``).

The Predictor is built as bench builds it (CPU provider, the thread count, quantized weights folded unless
asked not to, fused for runtime unless asked not to) with onnxruntime's profiler on
(``SessionOptions.enable_profiling``), and called on bench's own inputs for the timing budget at each batch
size. The JSON file onnxruntime writes goes to a private temporary folder, removed after it is read. Per
kernel (a node of the session's graph, after onnxruntime's rewrites): its op type, its share of the time
spent in kernels, its time per call. onnxruntime's profiler records whole microseconds per call and slows
each run down: compare shares and kernels with each other, not these times with bench's.

Light: numpy, onnxruntime and onnx (no TensorFlow).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

from edgeattn.core import defaults

TOP = 25  # kernels in the table (the JSON has them all)
WARM_RUNS = 3  # first runs left out: allocations, the Predictor binding its buffers
# At most this many kernel calls are recorded per batch size (onnxruntime writes ~600 bytes of JSON per call).
MAX_KERNEL_CALLS = 60_000


@dataclass
class KernelTime:
    name: str  # the node's name in the session's graph
    op_type: str
    calls: int
    total_us: float
    share: float  # of the time spent in all kernels, 0..1
    us_per_call: float


@dataclass
class Profile:
    batch: int
    runs: int  # profiled runs (after the warm-up ones)
    run_us: float  # a run's mean time, as onnxruntime's profiler measured it
    kernel_us: float  # time in kernels per run
    kernels: list[KernelTime] = field(default_factory=list)  # every kernel that ran, most time first

    @property
    def kernel_count(self) -> int:
        return len(self.kernels)

    def to_dict(self) -> dict:
        return {**asdict(self), "kernel_count": self.kernel_count}


def profile(
    model_path: str | os.PathLike,
    batches: tuple[int, ...] = defaults.BENCH_BATCHES,
    threads: int = defaults.BENCH_THREADS,
    seconds: float = defaults.BENCH_SECONDS,
    time_steps: int | None = None,
    fold_weights: bool = True,
    fuse_for_runtime: bool = True,
    progress: Callable[[str], None] | None = None,
) -> list[Profile]:
    """The per-kernel profile of the Predictor on ``model_path`` at each batch size (see the module docstring):
    runs for ``seconds`` each, at most ``MAX_KERNEL_CALLS`` kernel calls' worth, on bench's inputs."""
    import onnx

    from edgeattn.deploy.bench import _as_called, timed_inputs
    from edgeattn.graphs.onnxfile import checked_copy
    from edgeattn.runtime import Predictor

    folder = tempfile.mkdtemp(prefix="edgeattn-profile-")  # this user's alone
    try:
        with checked_copy(model_path) as (copy, data):  # read once: what was checked is what is profiled
            proto = onnx.ModelProto.FromString(data)
            _, feeds = timed_inputs(proto, batches, time_steps)
            most = max(10, MAX_KERNEL_CALLS // max(len(proto.graph.node), 1))
            profiles = []
            for batch, feed in zip(batches, feeds):
                if progress:
                    progress(f"profiling batch {batch}: about {seconds:.0f} s, at most {most} runs")
                predictor = Predictor(
                    copy, ["cpu"], threads, fold_weights=fold_weights, fuse_for_runtime=fuse_for_runtime,
                    profile_prefix=os.path.join(folder, f"batch-{batch}"),
                )  # fmt: skip
                _call(predictor, _as_called(feed), seconds, most)
                with open(predictor.end_profiling()) as fh:
                    profiles.append(read_profile(json.load(fh), batch))
        return profiles
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _call(predictor, x, seconds: float, most: int) -> None:
    for _ in range(WARM_RUNS):
        predictor.predict(x)
    start, runs = time.perf_counter(), 0
    while runs < most and (time.perf_counter() - start < seconds or runs < 3):
        predictor.predict(x)
        runs += 1


def read_profile(events: list[dict], batch: int, warm: int = WARM_RUNS) -> Profile:
    """A ``Profile`` from the events of onnxruntime's profile JSON, leaving out the first ``warm`` runs."""
    runs = sorted((e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"),
                  key=lambda e: e["ts"])  # fmt: skip
    start = runs[warm]["ts"] if len(runs) > warm else 0
    kept = [r["dur"] for r in runs if r["ts"] >= start]
    per: dict[str, list] = {}  # node name: [op type, calls, total us]
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time") and e["ts"] >= start:
            entry = per.setdefault(
                e["name"][: -len("_kernel_time")], [e.get("args", {}).get("op_name", "?"), 0, 0]
            )
            entry[1] += 1
            entry[2] += e.get("dur", 0)
    total = sum(us for _, _, us in per.values())
    kernels = [KernelTime(name, op, calls, float(us), us / total if total else 0.0, us / calls)
               for name, (op, calls, us) in per.items()]  # fmt: skip
    kernels.sort(key=lambda k: (-k.total_us, k.name))
    run_us, kernel_us = (float(np.mean(kept)), total / len(kept)) if kept else (0.0, 0.0)
    return Profile(batch, len(kept), run_us, kernel_us, kernels)


def table(profile: Profile, top: int = TOP) -> list[str]:
    """The lines of the profile's table: the ``top`` kernels by time, then a line for the rest and the total."""
    lines = [
        f"profile, batch {profile.batch}: {profile.kernel_count} kernels, {profile.runs} runs profiled "
        f"(a run {profile.run_us:,.1f} us under the profiler, {profile.kernel_us:,.1f} us of it in kernels)",
        f"  {'kernel (node)':<52} {'op type':<24} {'share':>7} {'us/call':>10} {'calls':>8}",
    ]
    for k in profile.kernels[:top]:
        name = k.name if len(k.name) <= 52 else "..." + k.name[-49:]
        lines.append(
            f"  {name or '(unnamed)':<52} {k.op_type:<24} {k.share:>7.1%} {k.us_per_call:>10,.2f} {k.calls:>8}"
        )
    rest = profile.kernels[top:]
    if rest:
        share = sum(k.share for k in rest)
        lines.append(f"  {f'... {len(rest)} more kernels':<52} {'':<24} {share:>7.1%}")
    total = sum(k.share for k in profile.kernels)
    lines.append(
        f"  {f'total: {profile.kernel_count} kernels':<52} {'':<24} {total:>7.1%} {profile.kernel_us:>10,.1f} us per run"
    )
    return lines
