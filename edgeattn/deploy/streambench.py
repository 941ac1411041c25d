"""``edgeattn bench --stream``: what a streamed step costs, measured against a run on the whole window.

- A step model (``edgeattn.stream`` kind "step"): ``Stream.push`` of one step against one ``Predictor.predict`` of
  the whole window (``steps`` steps) on the whole-window model ``full``, batch 1. The stream starts from zeros
  every ``steps`` pushes, so it is timed over sequences as long as the window.
- A whole-window model (no stream metadata): ``Window(steps).push`` against ``Predictor.predict`` on the window.

Both fed the same seeded inputs (the whole window's, step by step), timed as ``bench`` times (``bench.measure``:
in turns, 5 rounds, in this process); the ratio is the push's p50 over the whole window's, round by round (the
median, and the lowest and highest round). ``max_abs_vs_full``: how far the push's output after the window's
steps is from the whole window's (a sequence output: from its last step); 0 for a Window, which is exact.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field

import numpy as np
import onnx

from edgeattn.core import defaults
from edgeattn.core.errors import InputError
from edgeattn.deploy.bench import Contender, _ort_threads, measure
from edgeattn.deploy.benchreport import ROUNDS, Ratio, Row, machine, timed_inputs

STEPS = 50  # the window timed where no model fixes it


@dataclass
class StreamBench:
    model: str
    full: str | None  # the whole-window model of a step model (None: the model itself, as a Window)
    kind: str  # "step" or "window"
    machine: str
    threads: int
    steps: int
    rows: list[Row] = field(default_factory=list)  # the push, then the whole window
    ratio: Ratio | None = None  # the push's p50 over the whole window's
    max_abs_vs_full: float | None = None

    @property
    def summary(self) -> str:
        what = "a step" if self.kind == "step" else f"a Window({self.steps}) push"
        r = self.ratio
        return (
            f"{what} costs {r.median:.2f} of a whole-window run of {self.steps} steps "
            f"(median of {ROUNDS} rounds, {r.low:.2f}-{r.high:.2f})"
        )

    def lines(self) -> list[str]:
        """The text report, as ``edgeattn bench`` prints its own."""
        full = f"whole window {self.full}" if self.full else "whole window the model itself"
        head = f"{'contender':<44} {'threads':>7} {'batch':>5} {'p50 us':>11} {'p99 us':>11} {'calls/s':>12}"
        out = [f"{self.model}: stream ({self.kind}), {full}, {self.steps} steps, {self.threads} thread(s) asked; "
               f"{self.machine}", head + f" {'x whole window':>18} {'vs whole window':>15}"]  # fmt: skip
        for r in self.rows:
            agree = self.max_abs_vs_full if r is self.rows[0] else 0.0
            out.append(
                f"{r.name:<44} {r.threads if r.threads else 'auto':>7} {r.batch:>5} {r.p50_us:>11,.1f} "
                f"{r.p99_us:>11,.1f} {r.samples_per_s:>12,.0f} {r.x['whole window']!s:>18} "
                + f"{'-' if agree is None else f'{agree:.1e}':>15}"
            )
        return [*out, self.summary]

    def to_dict(self) -> dict:
        return {**asdict(self), "summary": self.summary}


def run(
    model_path: str | os.PathLike,
    full: str | os.PathLike | None = None,
    steps: int | None = None,
    threads: int = defaults.BENCH_THREADS,
    seconds: float = defaults.BENCH_SECONDS,
    progress: Callable[[str], None] | None = None,
) -> StreamBench:
    """Time the push of a step model (against ``full``) or of a whole-window model's Window (see the module)."""
    from edgeattn.graphs.onnxfile import checked_copy
    from edgeattn.runtime import Predictor

    with ExitStack() as stack:  # read once: what was checked is what is timed
        copy, data = stack.enter_context(checked_copy(model_path))
        predictor = Predictor(copy, providers=["cpu"], threads=threads)
        spec = predictor._stream
        if spec is not None and spec.kind != "step":
            raise InputError(f"{model_path} is a {spec.kind} (chunk) model: bench --stream times step models "
                             "(one step per run) and whole-window models")  # fmt: skip
        if spec is not None and full is None:
            raise InputError(
                f"{model_path} is a step model: give the whole-window model to compare a step with, --full FULL",
                hint=f"edgeattn bench {model_path} --stream --full FULL.onnx --steps {steps or STEPS}",
            )
        if spec is None and full is not None:
            raise InputError(f"--full is for a step model; {model_path} is a whole-window model (no "
                             "edgeattn.stream metadata): bench --stream times its Window(T).push, without --full")  # fmt: skip
        reference, where = predictor, model_path
        if full is not None:
            full_copy, full_data = stack.enter_context(checked_copy(full))
            reference, where = Predictor(full_copy, providers=["cpu"], threads=threads), full
            data = full_data
        proto = onnx.ModelProto.FromString(data)
    if reference._stream is not None:
        raise InputError(f"--full {full} is a stream model too: give the whole-window model")
    steps = _steps(where, reference, steps)
    feed = timed_inputs(proto, (1,), steps if _free(reference) else None)[1][0]
    report = StreamBench(os.fspath(model_path), os.fspath(full) if full else None, "step" if spec else "window",
                         machine(), threads, steps)  # fmt: skip
    called = next(iter(feed.values())) if len(feed) == 1 else feed
    whole = Contender(lambda: reference.predict(called), _ort_threads(reference._session))
    if spec is not None:
        push, got = _step_contender(predictor, reference, feed, steps, full, model_path)
        name = "Stream.push (one step)"
    else:
        try:
            window, x = predictor.window(steps), next(iter(feed.values()))
        except ValueError as exc:  # not a model of one (batch, time, features...) input
            raise InputError(f"bench --stream: {exc}") from None
        pushes = [np.ascontiguousarray(x[:, t]) for t in range(steps)]
        got = [window.push(p) for p in pushes][-1]
        cycle = itertools.cycle(pushes)
        push = Contender(lambda: window.push(next(cycle)), _ort_threads(predictor._session))
        name = f"Window({steps}).push"
    report.max_abs_vs_full = _agreement(got, reference.predict(called))
    contenders = {name: push, f"Predictor.predict ({steps} steps{', full' if full else ''})": whole}
    report.rows = measure(contenders, 1, seconds, progress=progress)
    per = [a / b for a, b in zip(report.rows[0].round_p50_us, report.rows[1].round_p50_us)]
    report.ratio = Ratio(float(np.median(per)), min(per), max(per))
    report.rows[0].x["whole window"], report.rows[1].x["whole window"] = report.ratio, Ratio(1.0, 1.0, 1.0)
    return report


def _free(predictor) -> bool:
    return any(len(s.shape) > 1 and not isinstance(s.shape[1], int) for s in predictor.inputs)


def _steps(where, reference, steps: int | None) -> int:
    """The window's length: the whole-window model's, else ``steps``, else ``STEPS``."""
    fixed = next(
        (s.shape[1] for s in reference.inputs if len(s.shape) > 1 and isinstance(s.shape[1], int)), None
    )
    if fixed is not None and steps not in (None, fixed):
        raise InputError(f"{where} takes windows of {fixed} steps (its time axis is fixed): --steps {steps} does "
                         "not fit; leave it out")  # fmt: skip
    return fixed or steps or STEPS


def _step_contender(predictor, reference, feed: dict, steps: int, full, model_path):
    """The timed push of a step model and its output after the window's steps; the whole-window model's inputs
    must be the step model's data inputs with a time axis (by name, or in order)."""
    data, wins = predictor._stream.inputs, reference.inputs
    pairs = {s.name: s.name for s in data} if {s.name for s in data} == {w.name for w in wins} else (
        {s.name: w.name for s, w in zip(data, wins)} if len(data) == len(wins) else None)  # fmt: skip
    by_name = {w.name: w for w in wins}
    if pairs is None or any(
        s.dtype != by_name[w].dtype
        or len(s.shape) != len(by_name[w].shape)
        or s.shape[2:] != by_name[w].shape[2:]
        for s, w in ((s, pairs[s.name]) for s in data)
    ):
        mine, theirs = ", ".join(map(str, data)), ", ".join(map(str, wins))
        raise InputError(f"--full {full}: its inputs ({theirs}) do not match the data inputs of {model_path} "
                         f"({mine}): each must be the same with a time axis")  # fmt: skip
    stream = predictor.stream()
    pushes = [{s.name: np.ascontiguousarray(feed[pairs[s.name]][:, t]) for s in data} for t in range(steps)]
    pushes = [p[data[0].name] for p in pushes] if len(data) == 1 else pushes
    got = [stream.push(p) for p in pushes][-1]
    cycle = itertools.cycle(enumerate(pushes))

    def push() -> None:
        t, x = next(cycle)
        if t == 0:
            stream.reset()  # each sequence as long as the window
        stream.push(x)

    return Contender(push, _ort_threads(predictor._session)), got


def _agreement(got: np.ndarray, want: np.ndarray) -> float | None:
    """Max abs between the push's output and the whole window's (a sequence output: its last step)."""
    if want.shape != got.shape and want.ndim == got.ndim + 1 and want.shape[:1] + want.shape[2:] == got.shape:
        want = want[:, -1]
    diff = got.astype(np.float64) - want.astype(np.float64) if got.shape == want.shape else None
    return None if diff is None else float(np.max(np.abs(diff), initial=0.0))
