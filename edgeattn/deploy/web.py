"""``edgeattn web``: a static site that runs an exported model in the browser with onnxruntime-web (WebAssembly)
and checks it there against the reference outputs stored in the model (``verify --golden``, on the device).

The site: ``index.html`` (self-check on load, a form for one sample, the prediction, its timing and the
attention as a heatmap) and its script ``page.js``, ``edgeattn.js`` (an ES module others can import:
``EdgeAttn.load``, ``.predict``, ``.selfCheck``), ``model.onnx``, ``model.json`` (input/output spec and the reference set as plain JSON), and
onnxruntime-web: copied from ``ort_web`` (a local ``onnxruntime-web/dist`` folder) into ``ort/``, or else
loaded from a public CDN at a pinned version, the script with Subresource Integrity.

Every string from the model (names, metadata, a text model's vocabulary) reaches the page as text only, and the
page carries a Content Security Policy (a meta tag; ``server`` also sends it as a header): scripts only from the
site itself (and the pinned onnxruntime-web folder on the CDN), no inline script, WebAssembly compiled
('wasm-unsafe-eval'), fetches only from the site (and that CDN folder), nothing else.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import html
import json
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import ClassVar

import numpy as np

from edgeattn.core import defaults
from edgeattn.core.errors import InputError
from edgeattn.core.files import write_folder_atomic
from edgeattn.runtime import ATTENTION_OUTPUT, GOLDEN_KEY, decode_array

ORT_WEB_VERSION = "1.30.0"
CDN = f"https://cdn.jsdelivr.net/npm/onnxruntime-web@{ORT_WEB_VERSION}/dist/"
ORT_SCRIPT = "ort.wasm.min.js"
# sha384 of dist/ort.wasm.min.js in the onnxruntime-web 1.30.0 package (a test checks it against npm's copy).
ORT_SCRIPT_SRI = "sha384-Bw6URI+Gvoadw0do7/QrSHUC9D1vCYYK5OSqChFyhyV5mzPL4oe2rOAFljAnS8Sq"
# What the WebAssembly build loads: the script, then its Emscripten module and the binary.
ORT_FILES = (ORT_SCRIPT, "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
# Headless Chromium as the tests and scripts/web_latency.py start it (root, no GPU, a closed network).
CHROMIUM_ARGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
)  # fmt: skip
MIME = {
    ".mjs": "text/javascript",
    ".js": "text/javascript",
    ".wasm": "application/wasm",
    ".json": "application/json",
}


@dataclass(frozen=True)
class Site:
    path: Path
    files: list[str]
    size_bytes: int
    ort_source: str  # "local" or the CDN URL


def build(
    model_path: str | os.PathLike,
    out: str | os.PathLike,
    ort_web: str | os.PathLike | None = None,
    force: bool = False,
) -> Site:
    """Write the site for ``model_path`` into the folder ``out`` (atomically). See the module docstring."""
    from edgeattn.graphs.graph import summarize
    from edgeattn.graphs.onnxfile import read_onnx

    model_path = Path(model_path)
    proto, model_bytes = read_onnx(model_path)  # the site gets the bytes that were checked
    if any(t.data_location == 1 for t in proto.graph.initializer):
        raise InputError(
            f"{model_path} keeps its weights in external files; the web page needs one .onnx file"
        )
    meta = {p.key: p.value for p in proto.metadata_props}
    try:
        stream = json.loads(meta["edgeattn.stream"]) if "edgeattn.stream" in meta else None
    except ValueError:
        raise InputError(f"{model_path}: its edgeattn.stream entry is not JSON edgeattn wrote") from None
    if GOLDEN_KEY not in meta and stream is None:  # a stream model has none: its outputs depend on its state
        raise InputError(
            f"{model_path} holds no reference set, so the page could not check itself",
            hint="export it again without --no-golden",
        )
    summary = summarize(proto)
    golden = json.loads(meta[GOLDEN_KEY]) if GOLDEN_KEY in meta else None
    inputs = {name: decode_array(blob) for name, blob in golden["inputs"].items()} if golden else {}
    outputs = {name: decode_array(blob) for name, blob in golden["outputs"].items()} if golden else {}
    description = {
        "name": model_path.stem,
        "inputs": [_spec(*s) for s in summary.inputs],
        "outputs": [_spec(*s) for s in summary.outputs],
        "attention": ATTENTION_OUTPUT in [name for name, _, _ in summary.outputs],
        "text": json.loads(meta["edgeattn.text"]) if "edgeattn.text" in meta else None,  # tokenizer rules
        "stream": stream,  # the states a step or stateful model carries (page.js streams a sequence)
        # token ids for random samples: below the largest id of the reference set (valid for its Embedding)
        "int_high": {k: int(v.max()) + 1 for k, v in inputs.items() if v.dtype.kind in "iu"},
        "golden": {
            "inputs": {k: _plain(v) for k, v in inputs.items()},
            "outputs": {k: _plain(v) for k, v in outputs.items()},
            "atol": float(golden.get("atol", defaults.ATOL)),
            # a quantized file's accepted tolerance, per output
            "atols": {k: float(v) for k, v in golden.get("atols", {}).items()},
        }
        if golden
        else None,
    }
    files: dict[str, bytes | Path] = {
        "model.onnx": model_bytes,
        "model.json": json.dumps(description).encode(),
    }
    if ort_web is not None:
        ort_dir = Path(ort_web)
        missing = [name for name in ORT_FILES if not (ort_dir / name).is_file()]
        if missing:
            raise InputError(
                f"--ort-web {ort_dir}: not an onnxruntime-web dist folder (missing {', '.join(missing)})",
                hint="npm install onnxruntime-web, then --ort-web node_modules/onnxruntime-web/dist",
            )
        files.update({f"ort/{name}": ort_dir / name for name in ORT_FILES})
        script, source = f'<script src="ort/{ORT_SCRIPT}"></script>', "local"
        wasm_paths = "ort/"  # page.js makes it absolute (module specifiers must be)
    else:
        script = (
            f'<script src="{CDN}{ORT_SCRIPT}" integrity="{ORT_SCRIPT_SRI}" crossorigin="anonymous"></script>'
        )
        wasm_paths, source = CDN, CDN
    assets = resources.files("edgeattn.deploy") / "web_assets"
    page = (assets / "index.html").read_text(encoding="utf-8")
    for key, value in {
        "__CSP__": csp(page, cdn=ort_web is None),
        "__ORT_SCRIPT__": script,
        "__WASM_PATHS__": wasm_paths,
        "__ORT_VERSION__": ORT_WEB_VERSION,
        "__TITLE__": html.escape(model_path.name),
    }.items():
        page = page.replace(key, value)
    files["index.html"] = page.encode()
    files["edgeattn.js"] = (assets / "edgeattn.js").read_bytes()
    files["page.js"] = (assets / "page.js").read_bytes()
    path = write_folder_atomic(out, files, force=force)
    size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return Site(path=path, files=sorted(files), size_bytes=size, ort_source=source)


def csp(page: str, cdn: bool) -> str:
    """The page's Content Security Policy: scripts from the site itself (and the pinned onnxruntime-web folder on
    the CDN when the site loads it from there), never inline; WebAssembly may compile ('wasm-unsafe-eval', what
    onnxruntime-web needs; with one thread it starts no worker); fetches only from the same places; the page's one
    inline <style> by its hash; no images, frames, plugins, forms or <base>."""
    import re

    style = re.search(r"<style>(.*?)</style>", page, re.S)
    style_hash = base64.b64encode(hashlib.sha256(style.group(1).encode()).digest()).decode() if style else ""
    extra = f" {CDN}" if cdn else ""
    return (
        f"default-src 'none'; script-src 'self'{extra} 'wasm-unsafe-eval'; connect-src 'self'{extra}; "
        f"style-src 'sha256-{style_hash}'; base-uri 'none'; form-action 'none'; object-src 'none'"
    )


def _spec(name: str, shape, dtype: str) -> dict:
    return {"name": name, "shape": list(shape), "dtype": dtype}


def _plain(array: np.ndarray) -> dict:
    return {"dims": list(array.shape), "data": array.ravel().tolist(), "dtype": str(array.dtype)}


def server(folder: str | os.PathLike, port: int = defaults.PORT):
    """An HTTP server for ``folder`` on 127.0.0.1 (WebAssembly does not load from file://). The caller runs
    ``serve_forever()`` and ``shutdown()``; ``server.server_address[1]`` is the port (0 picks a free one)."""
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    class Handler(SimpleHTTPRequestHandler):
        extensions_map: ClassVar[dict[str, str]] = {**SimpleHTTPRequestHandler.extensions_map, **MIME}

        def log_message(self, format, *args):  # quiet: the CLI says where to look
            pass

        def end_headers(self):  # the page's policy as a header too (frame-ancestors works only there)
            self.send_header("X-Content-Type-Options", "nosniff")
            if policy:
                self.send_header("Content-Security-Policy", policy + "; frame-ancestors 'none'")
            super().end_headers()

    folder = Path(folder)
    if not (folder / "index.html").is_file():
        raise InputError(f"{folder} holds no index.html: not a site written by edgeattn web")
    import re

    found = re.search(
        r'http-equiv="Content-Security-Policy" content="([^"]*)"', (folder / "index.html").read_text()
    )
    policy = html.unescape(found.group(1)) if found else None
    try:
        return ThreadingHTTPServer(("127.0.0.1", port), functools.partial(Handler, directory=str(folder)))
    except OSError as exc:
        raise InputError(
            f"cannot listen on 127.0.0.1:{port}: {exc.strerror}", hint="pick another --port"
        ) from None
