"""``edgeattn bench --stream`` (edgeattn/deploy/streambench.py): a step's Stream.push against a run of the whole
window, and a whole-window model's Window.push against predict; through the library and the command line."""

from __future__ import annotations

import json

import onnx
import pytest
from conftest import MODELS, run_cli
from test_stream_runtime import lstm_model

from edgeattn.core.errors import InputError
from edgeattn.deploy import streambench

SEED = MODELS / "seed.onnx"


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    """An LSTM(64) over 8 features as a step model and as its whole-window twin; a twin of other features; and
    the stateful (chunk) kind."""
    folder = tmp_path_factory.mktemp("streambench")
    models = {"step": lstm_model("step", features=8, hidden=64, outputs=1),
              "full": lstm_model("full", features=8, hidden=64, outputs=1),
              "other": lstm_model("full", features=5, hidden=64, outputs=1),
              "stateful": lstm_model("stateful", features=8, hidden=64, outputs=1)}  # fmt: skip
    for name, model in models.items():
        onnx.save(model, folder / f"{name}.onnx")
    return {name: folder / f"{name}.onnx" for name in models}


def test_a_step_against_the_whole_window(files):
    report = streambench.run(files["step"], full=files["full"], steps=50, seconds=0.5)
    assert report.kind == "step" and report.steps == 50
    assert [r.name for r in report.rows] == ["Stream.push (one step)", "Predictor.predict (50 steps, full)"]
    assert report.max_abs_vs_full is not None and report.max_abs_vs_full < 1e-5  # 50 steps == the window
    # measured at about 0.2 on a 2-core Xeon; a push that fell off its bound lane would cost far more
    assert 0 < report.ratio.median < 0.5
    assert report.summary.startswith(
        f"a step costs {report.ratio.median:.2f} of a whole-window run of 50 steps"
    )


def test_a_window_push_against_predict_on_the_window():
    report = streambench.run(SEED, seconds=0.5)
    assert report.kind == "window" and report.steps == 10 and report.full is None
    assert report.rows[0].name == "Window(10).push" and report.max_abs_vs_full == 0.0  # exact
    assert 0 < report.ratio.median < 1.5  # measured at 0.98-1.00; a copy of the window a push would show


@pytest.mark.parametrize(
    ("model", "kwargs", "message"),
    [
        ("step", {}, "is a step model: give the whole-window model to compare a step with, --full FULL"),
        ("seed", {"full": "full"}, "--full is for a step model; .*seed.onnx is a whole-window model"),
        (
            "step",
            {"full": "other"},
            r"its inputs \(x: \(batch, time, 5\) float32\) do not match the data inputs",
        ),
        ("step", {"full": "step"}, "is a stream model too: give the whole-window model"),
        ("stateful", {}, r"is a stateful \(chunk\) model"),
        ("seed", {"steps": 5}, "takes windows of 10 steps .*: --steps 5 does not fit"),
    ],
)
def test_what_cannot_be_compared_is_refused(files, model, kwargs, message):
    path = SEED if model == "seed" else files[model]
    kwargs = {k: files[v] if k == "full" else v for k, v in kwargs.items()}
    with pytest.raises(InputError, match=message):
        streambench.run(path, seconds=0.1, **kwargs)


def test_the_command_line(files, tmp_path):
    out = tmp_path / "stream.json"
    result = run_cli("bench", files["step"], "--stream", "--full", files["full"], "--steps", "50",
                     "--seconds", "0.5", "--json", out)  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"{files['step']}: stream (step), whole window {files['full']}, 50 steps")
    assert "x whole window" in lines[1] and lines[2].startswith("Stream.push (one step)")
    assert lines[-1].startswith("a step costs ")
    data = json.loads(out.read_text())
    assert data["kind"] == "step" and data["summary"] == lines[-1] and len(data["rows"]) == 2
    window = run_cli("bench", SEED, "--stream", "--seconds", "0.3")
    assert window.returncode == 0, window.stderr
    assert window.stdout.splitlines()[-1].startswith("a Window(10) push costs ")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--stream"], "is a step model: give the whole-window model"),
        (["--stream", "--full", "FULL", "--batch", "4"], "error: --batch: not with --stream"),
        (["--full", "FULL"], "error: --full and --steps go with --stream"),
    ],
)
def test_command_line_errors_are_one_line_and_exit_2(files, args, message):
    result = run_cli("bench", files["step"], *[str(files["full"]) if a == "FULL" else a for a in args])
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("error: ") and message in result.stderr.splitlines()[0]
    assert "Traceback" not in result.stderr and len(result.stderr.splitlines()) <= 2
