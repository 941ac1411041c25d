"""Keras' ``Conv1D`` as one one-dimensional ``Conv`` with its bias.

TensorFlow computes a 1-D convolution as a 2-D one over an inserted axis, and tf2onnx writes it so:
``Unsqueeze -> Transpose -> Conv (kernel 1 x k) -> Squeeze -> Add(bias)`` (or the bias added after the
transpose back), five kernels, and onnxruntime adds two more (``ReorderInput``/``ReorderOutput``) for its
blocked 2-D layout. ONNX ``Conv`` takes one spatial axis directly: ``Transpose -> Conv (kernel k, bias
inside)``, two kernels. The chain is matched node by node
(each intermediate read only inside it; strides, dilations and pads of the inserted axis 1, 1 and 0), and the
rewritten graph must give the original's outputs on seeded inputs (within 1e-5), or it is not used.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgeattn.graphs import graph

TOLERANCE = 1e-5


def conv1d(model: onnx.ModelProto, feeds: list[dict]) -> int:
    """Rewrite each 2-D convolution over an inserted axis as a 1-D one; returns how many (0 when the outputs
    on ``feeds`` moved)."""
    from edgeattn.graphs.onnxfile import take_if_same

    rewritten = onnx.ModelProto()
    rewritten.CopyFrom(model)
    g = rewritten.graph
    readers = graph.consumers(g)
    producers = {o: n for n in g.node for o in n.output}
    constants = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    outputs = {o.name for o in g.output}
    done = 0
    for conv in [n for n in g.node if n.op_type == "Conv"]:
        match = _match(conv, producers, readers, constants, outputs)
        if match is None:
            continue
        source, chain, out, bias, channels_last = match
        weight = constants[conv.input[1]][:, :, 0, :]
        name = f"{out}__conv1d"
        g.initializer.append(numpy_helper.from_array(weight, f"{name}_w"))
        inputs = [f"{name}_x", f"{name}_w"]
        if bias is not None:
            g.initializer.append(numpy_helper.from_array(bias.astype(np.float32), f"{name}_b"))
            inputs.append(f"{name}_b")
        pads = list(graph.attr(conv, "pads", [0, 0, 0, 0]))
        made = [
            helper.make_node("Transpose", [source], [f"{name}_x"], perm=[0, 2, 1]),
            helper.make_node(
                "Conv",
                inputs,
                [f"{name}_y" if channels_last else out],
                name=name,
                kernel_shape=[int(weight.shape[2])],
                strides=[list(graph.attr(conv, "strides", [1, 1]))[1]],
                dilations=[list(graph.attr(conv, "dilations", [1, 1]))[1]],
                pads=[pads[1], pads[3]],
                group=int(graph.attr(conv, "group", 1)),
            ),
        ]
        if channels_last:  # the bias was added after the transpose back: it is inside the Conv now
            made.append(helper.make_node("Transpose", [f"{name}_y"], [out], perm=[0, 2, 1]))
        position = min(list(g.node).index(n) for n in chain)
        for n in chain:
            g.node.remove(n)
        for k, n in enumerate(made):
            g.node.insert(position + k, n)
        done += 1
    return done if done and take_if_same(model, rewritten, feeds, TOLERANCE) else 0


def _axes(node, constants: dict) -> list[int] | None:
    if len(node.input) > 1:
        value = constants.get(node.input[1])
        return None if value is None else [int(a) for a in np.ravel(value)]
    axes = graph.attr(node, "axes")
    return None if axes is None else [int(a) for a in axes]


def _match(conv, producers, readers, constants, outputs):
    """(x, nodes, output, bias or None, channels-last) of ``Unsqueeze(x) -> Transpose -> conv -> Squeeze (->
    Add bias)``, or of ``... -> Squeeze -> Transpose back -> Add bias`` (channels-last: True)."""
    weight = constants.get(conv.input[1])
    if (
        weight is None
        or weight.ndim != 4
        or weight.shape[2] != 1
        or graph.attr(conv, "auto_pad", b"NOTSET")
        not in (
            b"NOTSET",
            "NOTSET",
        )
    ):
        return None
    pads = list(graph.attr(conv, "pads", [0, 0, 0, 0]))
    strides, dilations = (list(graph.attr(conv, key, [1, 1])) for key in ("strides", "dilations"))
    if strides[0] != 1 or dilations[0] != 1:
        return None
    if pads[0] != 0 or pads[2] != 0 or (len(conv.input) > 2 and conv.input[2]):
        return None
    transpose = producers.get(conv.input[0])
    if (
        transpose is None
        or transpose.op_type != "Transpose"
        or list(graph.attr(transpose, "perm", [])) != [0, 3, 1, 2]
    ):
        return None
    unsqueeze = producers.get(transpose.input[0])
    if (
        unsqueeze is None
        or unsqueeze.op_type != "Unsqueeze"
        or _axes(unsqueeze, constants) not in ([1], [-3])
    ):
        return None
    squeeze = graph.only_consumer(readers, conv.output[0], "Squeeze")
    if squeeze is None or _axes(squeeze, constants) not in ([2], [-2]):
        return None
    chain = [unsqueeze, transpose, conv, squeeze]
    out, bias, back = squeeze.output[0], None, None
    channels = weight.shape[0]
    after = graph.only_consumer(
        readers, out, "Transpose"
    )  # the bias added channels-last, after the transpose
    if after is not None and list(graph.attr(after, "perm", [])) == [0, 2, 1] and out not in outputs:
        back, shapes = after, ((channels,), (1, 1, channels))
    else:
        shapes = ((1, channels, 1), (channels, 1))
    add = graph.only_consumer(readers, (back or squeeze).output[0], "Add")
    other = next((i for i in add.input if i in constants), None) if add is not None else None
    if add is not None and other in constants and constants[other].shape in shapes:
        chain += [n for n in (back, add) if n is not None]
        out, bias = add.output[0], constants[other].reshape(-1)
    elif back is not None:
        back = None
    for node in chain[:-1]:  # every intermediate is read inside the chain only
        if node.output[0] in outputs or len(readers.get(node.output[0], [])) != 1:
            return None
    return unsqueeze.input[0], chain, out, bias, back is not None
