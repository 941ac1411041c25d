"""``from edgeattn.layers import Attention, NadarayaWatson``: the Keras layers where they have always been (the
code is in ``edgeattn.convert.layers``). ``from edgeattn import Attention`` works too, without importing
TensorFlow before the layer is used."""

from edgeattn.convert.layers import Attention, NadarayaWatson

__all__ = ["Attention", "NadarayaWatson"]
