"""Attention weights made visible: a compact text rendering and a heatmap image.

Works on ONNX files exported with ``--attention-weights``, through the Predictor (no TensorFlow). Weights of
shape (batch, time) (edgeattn's ``Attention``), (batch, n_queries, n_keys) (``NadarayaWatson``, Keras'
``Attention`` and ``AdditiveAttention``) or (batch, heads, n_queries, n_keys) (``MultiHeadAttention``).
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass

import numpy as np

from edgeattn.core.errors import InputError, require
from edgeattn.runtime import ATTENTION_OUTPUT, Predictor

SHADES = " ▁▂▃▄▅▆▇█"
MAX_TEXT_QUERIES = 4
MAX_HEADS = 8


@dataclass(frozen=True)
class Explanation:
    """What the model predicted for each sample and where it looked."""

    series: np.ndarray  # the first input, first feature: (samples, time) (or (samples, n_queries))
    outputs: dict  # every other output of the model, by name: (samples, ...) each
    weights: (
        np.ndarray
    )  # (samples, time), (samples, n_queries, n_keys) or (samples, heads, n_queries, n_keys)

    @property
    def predictions(self) -> np.ndarray:
        """The model's first output (the prediction)."""
        return next(iter(self.outputs.values()))

    @property
    def peaks(self) -> np.ndarray:
        """Index of the largest weight per sample (per query for kernel attention)."""
        return self.weights.argmax(axis=-1)


def explain(predictor: Predictor, x, samples: int | None = None) -> Explanation:
    """Run ``predictor`` on ``x`` (an array, or a dict for several inputs) and collect the attention weights."""
    if not predictor.has_attention:
        raise InputError(
            f"{os.path.basename(predictor.path)} has no attention_weights output",
            hint="export it with: edgeattn export SRC -o MODEL.onnx --attention-weights",
        )
    if samples is not None:
        x = {k: v[:samples] for k, v in x.items()} if isinstance(x, dict) else np.asarray(x)[:samples]
    try:
        computed = dict(zip((o.name for o in predictor.outputs), predictor.run(x)))
    except (TypeError, ValueError) as exc:
        raise InputError(str(exc)) from None
    weights = computed.pop(ATTENTION_OUTPUT)
    first = next(iter(x.values())) if isinstance(x, dict) else np.asarray(x)
    series = first.reshape(first.shape[0], first.shape[1], -1)[..., 0] if first.ndim >= 2 else first[:, None]
    return Explanation(series=series.astype(np.float64), outputs=computed, weights=weights)


def _shade(values: np.ndarray, lo: float | None = None, hi: float | None = None) -> str:
    lo = float(values.min()) if lo is None else lo
    hi = float(values.max()) if hi is None else hi
    scale = (values - lo) / (hi - lo) if hi > lo else np.ones_like(values)
    return "".join(SHADES[round(float(s) * (len(SHADES) - 1))] for s in np.clip(scale, 0.0, 1.0))


def _value(prediction: np.ndarray) -> str:
    flat = np.ravel(prediction)
    return " ".join(f"{v:.4g}" for v in flat[:4]) + (" ..." if flat.size > 4 else "")


def describe(explanation: Explanation) -> str:
    """What the text shows: the attention weights (their shape) and, per sample, every other output by name."""
    shapes = ", ".join(f"{name} {tuple(a.shape[1:])}" for name, a in explanation.outputs.items())
    return (
        f"{ATTENTION_OUTPUT} {tuple(explanation.weights.shape[1:])} per sample, as shades; "
        f"beside it every other output: {shapes or 'none'}"
    )


def render_text(explanation: Explanation) -> str:
    """A line saying what it shows, then one block per sample: every output (the prediction, and any other by
    name), the input as shades, and the attention as shades (0 .. row max)."""
    lines = [describe(explanation)]
    several = len(explanation.outputs) > 1
    for i, w in enumerate(explanation.weights):
        values = "  ".join(
            f"{name if several else 'prediction'} {_value(a[i])}" for name, a in explanation.outputs.items()
        )
        if w.ndim == 1:
            peak = int(w.argmax())
            lines.append(f"sample {i}  {values}  attention peaks at t={peak} ({w[peak]:.2f})")
            lines.append(f"  input      {_shade(explanation.series[i])}")
            lines.append(f"  attention  {_shade(w, 0.0)}")
        else:
            lines.append(f"sample {i}  {values}")
            heads = w.reshape(-1, *w.shape[-2:])
            for h, head in enumerate(heads[:MAX_HEADS]):
                label = f"head {h} " if len(heads) > 1 else ""
                for q in range(min(len(head), MAX_TEXT_QUERIES)):
                    peak = int(head[q].argmax())
                    lines.append(
                        f"  {label}query {q:<3} {_shade(head[q], 0.0)}  peak at key {peak} ({head[q, peak]:.2f})"
                    )
            if w.shape[-2] > MAX_TEXT_QUERIES:
                lines.append(f"  ... {w.shape[-2] - MAX_TEXT_QUERIES} more queries per head (see --png)")
    return "\n".join(lines)


def render_png(explanation: Explanation, title: str = "") -> bytes:
    """A PNG: the input series above a heatmap of the weights (samples x time), peaks marked."""
    require("matplotlib", "plot")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    w = explanation.weights
    if w.ndim >= 3:
        heads = w[0].reshape(-1, *w.shape[-2:])[:MAX_HEADS]
        fig, axes = plt.subplots(1, len(heads), figsize=(1 + 5 * len(heads), 5), squeeze=False)
        for h, (ax, head) in enumerate(zip(axes[0], heads)):
            image = ax.imshow(head, aspect="auto", cmap="viridis", interpolation="nearest", vmin=0.0)
            ax.set_xlabel("key")
            ax.set_ylabel("query")
            ax.set_title(f"head {h}" if len(heads) > 1 else "sample 0")
        fig.suptitle(title or "attention weights, sample 0")
        fig.colorbar(image, ax=list(axes[0]), label="weight")
    else:
        n, steps = w.shape
        fig, (top, bottom) = plt.subplots(
            2, 1, figsize=(max(6, 0.5 * steps + 3), 3 + 0.35 * n + 2), sharex=True,
            gridspec_kw={"height_ratios": [1, max(1.0, n / 6)]},
        )  # fmt: skip
        for i in range(n):
            top.plot(range(steps), explanation.series[i], marker="o", markersize=3, linewidth=1, label=f"{i}")
        top.set_ylabel("input")
        top.set_title(title or "input series (top) and attention weights (bottom)")
        if n <= 10:
            top.legend(title="sample", fontsize=7, ncols=min(n, 5), loc="upper right")
        image = bottom.imshow(w, aspect="auto", cmap="viridis", interpolation="nearest", vmin=0.0)
        bottom.scatter(explanation.peaks, range(n), marker="x", color="red", s=30, label="attention peak")
        bottom.scatter(explanation.series.argmax(axis=1), range(n), marker="o", facecolors="none",
                       edgecolors="white", s=60, label="input max")  # fmt: skip
        bottom.set_xlabel("time step")
        bottom.set_ylabel("sample")
        bottom.set_xticks(range(steps))
        bottom.legend(fontsize=7, loc="upper right", framealpha=0.6)
        fig.colorbar(image, ax=[top, bottom], label="attention weight", shrink=0.8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()
