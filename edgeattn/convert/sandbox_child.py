"""The child-process side of ``edgeattn.core.sandbox``: run as ``edgeattn.convert.sandbox_child KIND PATH``, it
parses one untrusted file fully and prints one JSON line. Nothing imports this module; ``sandbox.parse``
starts it isolated (``sandbox.child_command``) in a private folder."""

from __future__ import annotations

import importlib.util
import json
import sys

from edgeattn.core import errors
from edgeattn.core.errors import first_line


def _read_everything_h5(source) -> None:
    """Read every dataset of an HDF5 file (path or file object): what Keras will read, and then some."""
    import h5py

    def visit(_name, obj):
        if isinstance(obj, h5py.Dataset):
            obj[()]

    with h5py.File(source, "r") as f:
        f.visititems(visit)


def _child_model(path: str) -> dict:
    import io
    import zipfile

    from edgeattn.convert.loading import read_config

    config = read_config(path, contain=False)
    if config.format == "savedmodel":
        from edgeattn.convert.savedmodel import read_all_weights

        read_all_weights(path)
    elif config.format == "h5":
        _read_everything_h5(path)
    else:
        with zipfile.ZipFile(path) as zf:
            for name in zf.namelist():
                if name.endswith(".h5"):
                    _read_everything_h5(io.BytesIO(zf.read(name)))
    return {"format": config.format, "config": config.config, "keras_version": config.keras_version}


def _child_onnx(path: str) -> dict:
    from edgeattn.graphs.onnxfile import load_onnx, open_session
    from edgeattn.runtime import is_ort_format

    # The protobuf parse and the external-data check (an ORT-format flatbuffer has neither).
    nodes = None if is_ort_format(path) else len(load_onnx(path, contain=False).graph.node)
    try:
        open_session(path, ["cpu"], threads=1)
    except Exception as exc:  # a refusal is not a crash: the caller reports it in its own words
        return {"nodes": nodes, "onnxruntime_error": first_line(exc)}
    return {"nodes": nodes}


def _child_savedmodel(path: str) -> dict:
    from edgeattn.convert import tfgraph

    return tfgraph.scan(path, light=True)  # saved_model.pb as data: its ops, checked against the allowlist


def _child(kind: str, path: str) -> None:
    try:
        reply = {"model": _child_model, "onnx": _child_onnx, "savedmodel": _child_savedmodel}[kind](path)
    except errors.EdgeAttnError as exc:
        reply = errors.as_reply(exc)
    except MemoryError:
        reply = {"error": f"{path}: reading it needs more memory than the limit", "memory": True}
    except ImportError as exc:  # an installed library that cannot load: the memory limit is too small for it
        missing = exc.name is not None and importlib.util.find_spec(exc.name.split(".")[0]) is None
        if missing:
            reply = {"error": f"{path} could not be read: {exc.name} is not installed"}
        else:
            reply = {
                "error": f"{path}: the reader's libraries could not load within the limit",
                "memory": True,
            }
    except Exception as exc:
        reply = {"error": f"{path} could not be read: {type(exc).__name__}: {first_line(exc)}"}
    sys.stdout.write(json.dumps(reply) + "\n")


if __name__ == "__main__":
    _child(sys.argv[1], sys.argv[2])
