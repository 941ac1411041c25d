"""Shared fixtures: a small seed-shaped Keras model saved as .keras, and its ONNX export (once per session)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"
ORT_DIST = ROOT / "node_modules" / "onnxruntime-web" / "dist"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def need(condition: bool, why: str) -> None:
    """Skip a test whose outside part is missing here; in CI, which must provide it, fail instead."""
    if not condition:
        if os.environ.get("CI"):
            pytest.fail(f"CI must provide this: {why}")
        pytest.skip(why)


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium, headless, driven by playwright (no browser download)."""
    from edgeattn.deploy import web

    need(os.path.exists(CHROMIUM), "Debian's chromium is not installed (apt-get install -y chromium)")
    need(ORT_DIST.is_dir(), "onnxruntime-web is not installed (npm ci)")
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=list(web.CHROMIUM_ARGS))
        yield browser
        browser.close()


def run_cli(*args: str, input: str | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run the installed console script, as a user would."""
    exe = Path(sys.executable).parent / "edgeattn"
    return subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, input=input, cwd=cwd)


@pytest.fixture(scope="session")
def seed_keras(tmp_path_factory) -> Path:
    """The seed's architecture with a few steps of training (fast; parity does not need accuracy)."""
    from edgeattn.convert.tasks import build_seed_model, find_max_data

    model = build_seed_model(seed=1)
    x, y = find_max_data(256, seed=1)
    model.fit(x, y, epochs=1, batch_size=64, verbose=0)
    path = tmp_path_factory.mktemp("models") / "seed.keras"
    model.save(path)
    return path


@pytest.fixture(scope="session")
def seed_onnx(seed_keras, tmp_path_factory) -> Path:
    from edgeattn.convert.export import ExportOptions, export

    out = tmp_path_factory.mktemp("onnx") / "seed.onnx"
    export(seed_keras, out, ExportOptions(attention_weights=True))
    return out


@pytest.fixture(scope="session")
def seed_onnx_plain(seed_keras, tmp_path_factory) -> Path:
    from edgeattn.convert.export import export

    out = tmp_path_factory.mktemp("onnx") / "plain.onnx"
    export(seed_keras, out)
    return out
