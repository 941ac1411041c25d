"""The inputs of a model whose file records none (a subclassed model, built by its first call): the
``--input-spec "x:float32[batch,10,1]"`` parser (``parse_input_spec``, giving ``InputShape``s), and
``build_inputs``, which builds such a model on them as a functional model, whose inputs the export reads.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from edgeattn.core.errors import InputError

if TYPE_CHECKING:
    from edgeattn.convert.modelconfig import ModelConfig

FREE_AXES = ("batch", "time")  # names of free axes in --input-spec (any other name is free too)
DTYPES = ("float32", "float16", "float64", "int32", "int64", "bool")


@dataclass(frozen=True)
class InputShape:
    """One input of a model that records none (``--input-spec "x:float32[batch,10,1]"``); free axes are None."""

    name: str
    dtype: str
    shape: tuple


def parse_input_spec(text: str) -> InputShape:
    """``NAME:DTYPE[D0,D1,...]`` with whole numbers for fixed axes and names (``batch``, ``time``) for free
    ones; the first axis is the batch, named (the export keeps it free). ``DTYPE`` defaults to float32
    (``x[batch,10,1]``)."""
    found = re.fullmatch(r"\s*([A-Za-z_][\w./-]*)\s*(?::\s*(\w+))?\s*\[([^\]]*)\]\s*", text)
    if not found:
        raise InputError(
            f"--input-spec {text!r}: expected NAME:DTYPE[AXES], e.g. x:float32[batch,10,1]",
            hint="axes are whole numbers, or names (batch, time) for free axes",
        )
    name, dtype, axes = found.group(1), found.group(2) or "float32", found.group(3)
    if dtype not in DTYPES:
        raise InputError(f"--input-spec {text!r}: dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    dims = [a.strip() for a in axes.split(",")] if axes.strip() else []
    if not dims or any(not re.fullmatch(r"[0-9]+|[A-Za-z_][A-Za-z0-9_]*", d) for d in dims):
        raise InputError(
            f"--input-spec {text!r}: each axis is a whole number or a name such as batch or time"
        )
    if dims[0].isdigit():
        raise InputError(
            f"--input-spec {text!r}: the first axis is the batch, which the export keeps free",
            hint=f"name it: {name}:{dtype}[batch,{','.join(dims[1:])}]",
        )
    return InputShape(name, dtype, (None, *(int(d) if d.isdigit() else None for d in dims[1:])))


def build_inputs(model, input_shapes: tuple, source: ModelConfig):
    """A model built from a config that records no inputs (a subclassed model): built on ``input_shapes``
    (and wrapped as a functional model, whose inputs the export reads), or an InputError naming what is
    missing."""
    import keras

    try:
        if model.inputs:
            return model
    except (AttributeError, ValueError):
        pass
    if not input_shapes:
        raise InputError(
            f"{source.path} records no input shapes (a subclassed {type(model).__name__} is built by its "
            "first call)",
            hint='give them with --input-spec, e.g. --input-spec "x:float32[batch,10,1]" (once per input)',
        )
    inputs = [keras.Input(batch_shape=s.shape, dtype=s.dtype, name=s.name) for s in input_shapes]
    inputs = inputs[0] if len(inputs) == 1 else inputs
    return keras.Model(inputs, model(inputs), name=model.name)
