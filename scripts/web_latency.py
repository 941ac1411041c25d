"""The seed model in headless Chromium (onnxruntime-web, WebAssembly, 1 thread) next to the Python Predictor.

    .venv/bin/python scripts/web_latency.py [--runs 500] [--screenshot docs/web-seed.png]

Builds the `edgeattn web` site for models/seed.onnx with the npm copy of onnxruntime-web, serves it on
127.0.0.1, and times batch-1 predictions: in the page, `session.run` through EdgeAttn.predict (performance.now
around the run); in Python, Predictor.predict (one thread). Both get the same inputs; the two alternate in
rounds. Prints p50 and p90 of each, and the mean per prediction from timing whole rounds: a page without
cross-origin isolation gets performance.now() at 100 us resolution, so its p50 is coarse. Needs Debian's
chromium and `npm ci`.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from edgeattn.deploy import web
from edgeattn.runtime import Predictor

ROOT = Path(__file__).resolve().parent.parent
ORT_DIST = ROOT / "node_modules" / "onnxruntime-web" / "dist"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=500, help="timed predictions per side (in 5 rounds)")
    parser.add_argument("--screenshot", type=Path, help="also save a screenshot of the page after one sample")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    model = ROOT / "models" / "seed.onnx"
    x = np.random.default_rng(0).random((args.runs, 1, 10, 1), dtype=np.float32)
    predictor = Predictor(model, threads=1)
    with tempfile.TemporaryDirectory() as tmp:
        site = web.build(model, Path(tmp) / "site", ort_web=ORT_DIST).path
        httpd = web.server(site, 0)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=list(web.CHROMIUM_ARGS))
            page = browser.new_page(viewport={"width": 1000, "height": 900})
            page.goto(f"http://127.0.0.1:{httpd.server_address[1]}/")
            page.wait_for_selector("body[data-ready=true]", timeout=60_000)
            status = page.get_attribute("#self-check", "data-status")
            if args.screenshot:
                page.click("#random")
                page.wait_for_function("document.getElementById('result').dataset.outputs !== ''")
                page.screenshot(path=str(args.screenshot), full_page=True)
            for warm in x[:20]:  # warm both sides
                page.evaluate("async (x) => await window.edgeattn.model.predict(x)", warm.tolist())
                predictor.predict(warm)
            browser_ms, python_ms, browser_total, python_total = [], [], 0.0, 0.0
            for chunk in np.array_split(x, 5):
                timed = page.evaluate(
                    """async (xs) => {
                        const ms = []; const start = performance.now();
                        for (const x of xs) ms.push((await window.edgeattn.model.predict(x)).ms);
                        return {ms, total: performance.now() - start};
                    }""",
                    chunk.tolist(),
                )
                browser_ms += timed["ms"]
                browser_total += timed["total"]
                start_round = time.perf_counter()
                for sample in chunk:
                    start = time.perf_counter()
                    predictor.predict(sample)
                    python_ms.append((time.perf_counter() - start) * 1000)
                python_total += (time.perf_counter() - start_round) * 1000
            browser.close()
        httpd.shutdown()
    b50, p50 = np.median(browser_ms), np.median(python_ms)
    b_mean, p_mean = browser_total / len(x), python_total / len(x)
    print(f"self-check in the browser: {status}")
    print(f"{'contender':<46} {'p50 us':>8} {'p90 us':>8} {'mean us':>8}")
    for name, values, mean in (
        (f"browser: onnxruntime-web {web.ORT_WEB_VERSION}, wasm, 1 thread", browser_ms, b_mean),
        ("Python: edgeattn Predictor, 1 thread", python_ms, p_mean),
    ):
        print(
            f"{name:<46} {np.median(values) * 1000:>8.1f} {np.percentile(values, 90) * 1000:>8.1f} {mean * 1000:>8.1f}"
        )
    print(
        f"browser / Python: {b50 / p50:.1f}x at p50, {b_mean / p_mean:.1f}x in the mean "
        f"({len(x)} batch-1 predictions each, same inputs; the browser's mean includes the JS wrapper)"
    )
    print(f"chromium: {shutil.which('chromium') or CHROMIUM}")


if __name__ == "__main__":
    main()
