"""edgeattn: Keras recurrent models with attention, exported to plain ONNX and run on the edge.

Importing this package is light: the Keras layers are loaded (with TensorFlow/Keras) only when first used,
e.g. ``from edgeattn import Attention``. The predictor lives in ``edgeattn.runtime`` and needs only numpy
and onnxruntime.
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["Attention", "EdgeAttnError", "NadarayaWatson", "__version__"]

from edgeattn.core.errors import EdgeAttnError

_LAZY = {"Attention": "edgeattn.layers", "NadarayaWatson": "edgeattn.layers"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'edgeattn' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
