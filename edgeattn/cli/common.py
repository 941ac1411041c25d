"""What commands on both sides need before they run: TensorFlow kept quiet, a Predictor on checked bytes."""

from __future__ import annotations

import os
from pathlib import Path

from edgeattn.core.errors import InputError


def quiet_tensorflow() -> None:
    """Keep TensorFlow's and tf2onnx's start-up chatter out of the user's terminal."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    import logging
    import warnings

    warnings.filterwarnings("ignore", module=r"(keras|tensorflow|tf2onnx)(\.|$)")
    for name in ("tensorflow", "tf2onnx", "absl", "keras"):
        logging.getLogger(name).setLevel(logging.ERROR)


def checked_predictor(model: Path, provider: str | None = None):
    """A Predictor on the bytes that were checked: the file is read once, the contained child parses a private
    copy of those bytes (and of its external data), and the Predictor is built from that copy, not the path."""
    from edgeattn.graphs.onnxfile import checked_copy
    from edgeattn.runtime import Predictor

    with checked_copy(model, ort_format=True) as (copy, _):
        try:
            predictor = Predictor(copy, providers=[provider] if provider else None)
        except ValueError as exc:
            raise InputError(str(exc).replace(copy, str(model))) from None
    predictor.path = os.fspath(model)  # messages name the user's file
    return predictor
