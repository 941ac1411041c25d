"""Session-time rewrites for onnxruntime's CPU provider: its own fused kernels, in memory only.

The file edgeattn writes holds standard ONNX ops only, so that every runtime takes it. onnxruntime's CPU
provider has fused kernels of its own (``com.microsoft`` ops) that do in one call what the standard graph does
in several; ``for_cpu`` rewrites a model's bytes for it just before the session is built, and the file on disk
stays as it is (``Predictor(path, fuse_for_runtime=False)`` runs the stored graph).

What it does, each measured faster on the transformer fixtures (batch 1 and 256, one thread):

- A packed self-attention (what edgeattn writes for Keras' ``MultiHeadAttention``, see ``edgeattn.convert.standins``:
  one ``MatMul`` and bias ``Add`` for the query, key and value, a head split, ``Split``, the two products
  around ``Softmax``, a head merge) becomes one ``com.microsoft.Attention`` node, which projects, scales,
  splits heads, attends and merges heads in one kernel. Matched node by node, with every intermediate used
  only inside the pattern; the score scale is already folded into the query weights, so the node's ``scale``
  is 1.
- Each exact GELU as Keras exports it is put the way onnxruntime's own GeluFusion finds it (``x / sqrt(2)``
  for ``x * 0.7071``, a scalar 1), so that it becomes one ``Gelu`` kernel.

onnxruntime's ``SkipLayerNormalization`` and ``BiasGelu`` fusions are left off (``runtime.SLOWER_FUSIONS``):
measured 9-18% and 1-6% slower at batch 256.

Needs the ``onnx`` package (a dependency of edgeattn, not of an app that copied ``runtime.py`` alone): without
it, or on a graph it cannot read, ``for_cpu`` returns the bytes it was given. Measured, the ``Attention``
kernel against the stored graph (ratio of p50, one thread): ts-block1 0.77 at batch 1 and 0.83 at 256,
mha-conv4 0.50 and 0.40, k3-layernorm 0.73 and 0.77.
"""

from __future__ import annotations

ATTENTION_DOMAIN = "com.microsoft"


def for_cpu(data: bytes) -> bytes:
    """The model ``data`` with onnxruntime's CPU kernels in place of the standard subgraphs they fuse (the
    same bytes where nothing applies, ``onnx`` is missing, or the weights are stored outside the file)."""
    try:
        import onnx

        model = onnx.ModelProto.FromString(data)
    except Exception:  # no onnx; or bytes that onnxruntime refuses with its own message
        return data
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer):
        return data  # built from its path, as stored
    try:
        shapes = inferred_shapes(model)  # before the rewrites: onnx infers no com.microsoft op
        done = fuse_attention(model) + prepare_gelu(model) + dense_as_gemm(model, shapes)
    except Exception:  # a graph these cannot read runs as stored
        return data
    return model.SerializeToString() if done else data


def prepare_gelu(model) -> int:
    """Put each exact GELU as Keras exports it, ``x * 0.5 * (1 + erf(x * 0.7071...))``, the way onnxruntime's
    GeluFusion finds it: ``x / 1.4142...`` (the same value) and a scalar 1 (where the one-element 1 does not
    raise the rank). Returns how many. Measured: 3-8% faster on the transformer fixtures, batch 1 and 256."""
    import math

    import numpy as np
    import onnx
    from onnx import numpy_helper

    g = model.graph
    floats = (t for t in g.initializer if t.data_type == 1 and t.data_location != 1)  # float32, in the file
    one = {t.name: (numpy_helper.to_array(t).flat[0], len(t.dims)) for t in floats if math.prod(t.dims) == 1}
    made, ranks, done = {o: n for n in g.node for o in n.output}, None, 0
    for add in [n for n in g.node if n.op_type == "Add"]:  # each rewrite keeps the value, whatever is around
        erf = next((made[i] for i in add.input if i in made and made[i].op_type == "Erf"), None)
        mul = made.get(erf.input[0]) if erf else None
        if mul is None or mul.op_type != "Mul":
            continue
        k = [i for i, name in enumerate(mul.input) if abs(one.get(name, (0,))[0] - 0.5**0.5) < 1e-6]
        c = [i for i, name in enumerate(add.input) if one.get(name, (0,))[0] == 1]
        if len(k) != 1 or len(c) != 1:
            continue
        if (rank := one[add.input[c[0]]][1]) and ranks is None:  # erf's rank, which a 1 of higher rank raises
            try:  # (before this loop changes a node: inference must see a whole graph)
                info = onnx.shape_inference.infer_shapes(model).graph.value_info
            except Exception:  # onnx's own inference errors: no rank known
                info = []
            ranks = {v.name: len(t.shape.dim) for v in info if (t := v.type.tensor_type).HasField("shape")}
        mul.op_type, done = "Div", done + 1
        mul.input[0], mul.input[1] = mul.input[1 - k[0]], "edgeattn.runtime/sqrt2"
        if not rank or ranks.get(erf.output[0], 0) >= rank:
            add.input[c[0]] = "edgeattn.runtime/one"
    if done:
        for name, value in (("sqrt2", 2**0.5), ("one", 1.0)):
            g.initializer.append(
                numpy_helper.from_array(np.array(value, np.float32), f"edgeattn.runtime/{name}")
            )
    return done


# Activations onnxruntime fuses into the Gemm before them (FusedGemm).
GEMM_ACTIVATIONS = {"Relu", "Tanh", "Sigmoid", "LeakyRelu", "HardSigmoid"}


def inferred_shapes(model) -> dict[str, list]:
    """Each tensor's inferred shape: per axis its size, its symbol (``"batch"``), or None."""
    import onnx

    found = {}
    for v in (*onnx.shape_inference.infer_shapes(model).graph.value_info, *model.graph.input):
        dims = v.type.tensor_type.shape.dim
        found[v.name] = [d.dim_value if d.HasField("dim_value") else d.dim_param or None for d in dims]
    return found


def dense_as_gemm(model, shapes: dict[str, list]) -> int:
    """Let each ``Dense`` over a (batch, time, features) tensor, ``MatMul(x, W) -> Add(b) (-> activation)``, run
    as ``Reshape(x, (-1, D)) -> Gemm(W, b) (-> activation) -> Reshape((batch, time, N))``: onnxruntime's Gemm
    adds the bias inside its product and takes the activation into the same kernel. The target of the last
    Reshape is a constant for a fixed time axis, else the graph input's (batch, time), read once per input by
    one ``Shape`` node, where inference shows that x has that input's two leading axes. Same arithmetic;
    measured at batch 256 0.68x the time with a ReLU, 0.91x without, equal at batch 1."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    g = model.graph
    constants = {t.name: t for t in g.initializer}
    outputs = {o.name for o in g.output}
    readers = _readers(g)
    if max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0) < 15:
        return 0  # Shape(start, end), which a free time axis needs here, came with opset 15
    leading: dict[tuple, str | None] = {}
    for (
        i
    ) in g.input:  # (batch, time) symbols -> the one input they belong to (None: several inputs share them)
        key = tuple(shapes.get(i.name, [])[:2])
        if len(key) == 2:
            leading[key] = None if key in leading else i.name
    made_targets: dict = {}
    done = 0
    for matmul in [n for n in g.node if n.op_type == "MatMul" and n.input[1] in constants]:
        shape, weight = shapes.get(matmul.input[0]), constants[matmul.input[1]]
        if shape is None or len(shape) != 3 or None in shape[:2] or len(weight.dims) != 2:
            continue
        source = None if isinstance(shape[1], int) else leading.get(tuple(shape[:2]))
        if not isinstance(shape[1], int) and source is None:
            continue  # a free axis that no graph input gives
        add = _only_reader(matmul.output[0], "Add", readers, outputs)
        bias = next((i for i in add.input if i in constants), None) if add is not None else None
        if bias is None or list(constants[bias].dims) not in ([weight.dims[1]], [1, weight.dims[1]]):
            continue
        act = readers.get(add.output[0], [])
        free = add.output[0] not in outputs
        act = act[0] if len(act) == 1 and act[0].op_type in GEMM_ACTIVATIONS and free else None
        position = list(g.node).index(matmul)
        prefix, width = f"{matmul.output[0]}__gemm", int(weight.dims[1])
        g.initializer.append(
            numpy_helper.from_array(np.array([-1, weight.dims[0]], np.int64), f"{prefix}_in")
        )
        made = []
        if source is None:
            target = f"{prefix}_out"
            g.initializer.append(numpy_helper.from_array(np.array([-1, shape[1], width], np.int64), target))
        else:
            target = made_targets.get((source, width))
            if target is None:  # one Shape per graph input, one Concat per width, before their first use
                axes = made_targets.get(source)
                if axes is None:
                    axes = made_targets[source] = f"{source}__leading_axes"
                    made.append(helper.make_node("Shape", [source], [axes], start=0, end=2))
                target = made_targets[(source, width)] = f"{source}__leading_axes_{width}"
                g.initializer.append(numpy_helper.from_array(np.array([width], np.int64), f"{target}_width"))
                made.append(helper.make_node("Concat", [axes, f"{target}_width"], [target], axis=0))
        if len(constants[bias].dims) == 2:  # (1, N): Gemm's C as (N,)
            flat = numpy_helper.to_array(constants[bias]).reshape(-1)
            bias = f"{prefix}_bias"
            g.initializer.append(numpy_helper.from_array(flat, bias))
        made += [
            helper.make_node("Reshape", [matmul.input[0], f"{prefix}_in"], [f"{prefix}_rows"]),
            helper.make_node("Gemm", [f"{prefix}_rows", matmul.input[1], bias], [f"{prefix}_y"]),
        ]
        if act is not None:
            copy = onnx.NodeProto()
            copy.CopyFrom(act)
            copy.input[0], copy.output[0] = f"{prefix}_y", f"{prefix}_act"
            made.append(copy)
        made.append(helper.make_node("Reshape", [made[-1].output[0], target], [(act or add).output[0]]))
        for n in (matmul, add, act):
            if n is not None:
                g.node.remove(n)
        for k, n in enumerate(made):
            g.node.insert(position + k, n)
        done += 1
    return done


def fuse_attention(model) -> int:
    """Replace each packed self-attention with one ``com.microsoft.Attention`` node; returns how many."""
    import numpy as np
    from onnx import helper, numpy_helper

    g = model.graph
    constants = {t.name: t for t in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    readers = _readers(g)
    outputs = {o.name for o in g.output}
    fused = 0
    for softmax in [n for n in g.node if n.op_type == "Softmax"]:
        match = _match(softmax, producer, readers, constants, outputs)
        if match is None:
            continue
        x, weight, bias, heads, out, chain = match
        if bias is None:
            width = numpy_helper.to_array(constants[weight]).shape[1]
            bias = f"{out}__attention_bias"
            g.initializer.append(numpy_helper.from_array(np.zeros(width, np.float32), bias))
        node = helper.make_node(
            "Attention",
            [x, weight, bias],
            [out],
            name=f"{out}__attention",
            domain=ATTENTION_DOMAIN,
            num_heads=heads,
            scale=1.0,
        )
        position = min(list(g.node).index(n) for n in chain)
        for n in chain:
            g.node.remove(n)
        g.node.insert(position, node)
        fused += 1
    if fused and not any(o.domain == ATTENTION_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(ATTENTION_DOMAIN, 1))
    return fused


def _attr(node, name, default=None):
    from onnx import helper

    found = next((a for a in node.attribute if a.name == name), None)
    return default if found is None else helper.get_attribute_value(found)


def _const(name: str, constants: dict):
    from onnx import numpy_helper

    return numpy_helper.to_array(constants[name]) if name in constants else None


def _match(softmax, producer, readers, constants, outputs):
    """The packed self-attention around ``softmax`` as (x, weight, bias, heads, output, nodes), or None."""
    if _attr(softmax, "axis", -1) not in (-1, 4):
        return None
    scores = producer.get(softmax.input[0])
    mix = _only_reader(softmax.output[0], "MatMul", readers, outputs)
    if scores is None or scores.op_type != "MatMul" or mix is None or mix.input[0] != softmax.output[0]:
        return None
    q_t, k_t, v_t = (producer.get(name) for name in (scores.input[0], scores.input[1], mix.input[1]))
    if any(t is None or t.op_type != "Transpose" for t in (q_t, k_t, v_t)):
        return None
    perms = [list(_attr(t, "perm", [])) for t in (q_t, k_t, v_t)]
    if perms != [[2, 0, 3, 1, 4], [2, 0, 3, 4, 1], [2, 0, 3, 1, 4]]:
        return None
    split = producer.get(q_t.input[0])
    if split is None or split.op_type != "Split" or len(split.output) != 3 or _attr(split, "axis", 0) != 2:
        return None
    if [q_t.input[0], k_t.input[0], v_t.input[0]] != list(split.output):
        return None
    if len(split.input) > 1 and split.input[1]:
        sizes = _const(split.input[1], constants)
        if sizes is None or sizes.tolist() != [1, 1, 1]:
            return None
    reshape = producer.get(split.input[0])
    target = (
        _const(reshape.input[1], constants) if reshape is not None and reshape.op_type == "Reshape" else None
    )
    if target is None or len(target) != 5 or not _keeps_batch_and_time(target) or target[2] != 3:
        return None
    heads, size = int(target[3]), int(target[4])
    add = producer.get(reshape.input[0])
    bias = None
    if add is not None and add.op_type == "Add":
        bias = next((i for i in add.input if i in constants), None)
        matmul = producer.get(next((i for i in add.input if i != bias), ""))
        if bias is None or _const(bias, constants).shape != (3 * heads * size,):
            return None
    else:
        matmul, add = add, None
    if matmul is None or matmul.op_type != "MatMul" or matmul.input[1] not in constants:
        return None
    weight = _const(matmul.input[1], constants)
    if weight.ndim != 2 or weight.shape[1] != 3 * heads * size:
        return None
    merge = _only_reader(mix.output[0], "Transpose", readers, outputs)
    if merge is None or list(_attr(merge, "perm", [])) != [1, 3, 0, 2, 4]:
        return None
    final = _only_reader(merge.output[0], "Reshape", readers, outputs)
    target = _const(final.input[1], constants) if final is not None else None
    if target is None or len(target) != 3 or not _keeps_batch_and_time(target) or target[2] != heads * size:
        return None
    chain = [
        n for n in (matmul, add, reshape, split, q_t, k_t, v_t, scores, softmax, mix, merge) if n is not None
    ]
    inside = {id(n) for n in chain} | {id(final)}
    for n in chain:  # every intermediate is read inside the pattern only
        for o in n.output:
            if o in outputs or any(id(r) not in inside for r in readers.get(o, [])):
                return None
    return matmul.input[0], matmul.input[1], bias, heads, final.output[0], [*chain, final]


def _keeps_batch_and_time(target) -> bool:
    """Whether a Reshape target keeps the input's first two axes (batch, time): ``0`` copies the batch, and
    then the second entry is the time (copied, or its size: any other size would not hold the elements)."""
    first, second = int(target[0]), int(target[1])
    return (first == 0 and second >= 0) or (first == -1 and second == 0)


def _readers(g) -> dict[str, list]:
    """For each tensor, the nodes that read it, once per input slot (a node reading it twice is there twice:
    it is then not the only reader)."""
    readers: dict[str, list] = {}
    for n in g.node:
        for i in n.input:
            readers.setdefault(i, []).append(n)
    return readers


def _only_reader(name: str, op: str, readers, outputs):
    found = readers.get(name, [])
    if name in outputs or len(found) != 1 or found[0].op_type != op:
        return None
    return found[0]
