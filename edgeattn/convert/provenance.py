"""The provenance that export stamps into ``metadata_props`` (keys prefixed ``edgeattn.``): edgeattn's and the
converters' versions, the opset, the source (its name, its path relative to the exported file and the SHA-256
of the checked copy), the inputs, the parity result, what the source's path adds, and the golden reference set
(the reference's outputs on the last parity case) that the runtime's ``self_check`` re-runs on the device.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import onnx

from edgeattn import __version__
from edgeattn.convert import verify
from edgeattn.graphs import graph
from edgeattn.runtime import encode_array

GOLDEN_SAMPLES = 4


def _stamp(
    proto, source: Path, sha256: str, out: Path, reference, options, parity, cases, facts: dict
) -> None:
    """Write provenance (and the golden reference set: ``reference``'s outputs on the last parity case) into
    ``metadata_props``, keys prefixed ``edgeattn.``; ``sha256``: of the checked copy of ``source``;
    ``options``: the export's ``ExportOptions`` (its tolerances); ``facts``: what this source's path adds."""
    import tensorflow as tf
    import tf2onnx

    meta = {
        "edgeattn.version": __version__,
        "edgeattn.tensorflow_version": tf.__version__,
        "edgeattn.tf2onnx_version": tf2onnx.__version__,
        "edgeattn.onnx_version": onnx.__version__,
        "edgeattn.opset": str(graph.opset_of(proto)),
        "edgeattn.source": source.name,
        # relative to the exported file: no path of the machine that exported it
        "edgeattn.source_path": os.path.relpath(source.resolve(), out.resolve().parent),
        "edgeattn.source_sha256": sha256,
        "edgeattn.inputs": json.dumps(
            [{"name": s.name, "shape": list(s.shape), "dtype": s.dtype} for s in verify.input_specs(proto)]
        ),
        "edgeattn.parity": json.dumps(
            {
                "max_abs": parity.max_abs,
                "atol": options.atol,
                "rtol": options.rtol,
                "cases": parity.cases,
                "provider": parity.provider,
            }
        ),
        **facts,
    }
    if cases:
        feed = {k: v[:GOLDEN_SAMPLES] for k, v in cases[-1].feed.items()}
        golden = {
            "inputs": {k: encode_array(v) for k, v in feed.items()},
            "outputs": {o.name: encode_array(a) for o, a in zip(proto.graph.output, reference(feed))},
            "atol": options.atol,
        }
        meta["edgeattn.golden"] = json.dumps(golden)
    del proto.metadata_props[:]
    for key, value in meta.items():
        proto.metadata_props.add(key=key, value=value)
    proto.producer_name = "edgeattn"
    proto.producer_version = __version__
