"""Keras 2 nodes (the ``inbound_nodes`` of a layer's config) in the form Keras 3 reads. Pure data: nothing here
imports Keras.

A Keras 2 node is a list of entries ``[layer_name, node_index, tensor_index(, call kwargs)]``. Where its call
arguments hold other tensors (``MultiHeadAttention(query, value=..., key=...)``) or constants
(``_CONSTANT_VALUE`` entries of a TF op), it is written in Keras 3's node form (``to_keras3_node``), which
resolves tensor references; Keras 3's reader of Keras 2 nodes would pass them on as plain lists. A
``TFOpLambda`` / ``SlicingOpLambda`` layer (``tf_op_layer``) gets every tensor input as one list, its constant
arguments kept in a template whose tensor slots are ``{TENSOR_SLOT: i}`` (see ``edgeattn.convert.layers.TFOp``).
Used by ``edgeattn.convert.legacy``'s rewrite.
"""

from __future__ import annotations

CONSTANT = "_CONSTANT_VALUE"
TENSOR_SLOT = "__edgeattn_input__"


def _is_ref(value, names: frozenset) -> bool:
    """Keras 2's reference to a tensor inside call arguments: ``[layer_name, node_index, tensor_index]``."""
    return (
        isinstance(value, list)
        and len(value) == 3
        and isinstance(value[0], str)
        and value[0] in names
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value[1:])
    )


def _has_ref(value, names: frozenset) -> bool:
    if _is_ref(value, names):
        return True
    if isinstance(value, dict):
        return any(_has_ref(v, names) for v in value.values())
    if isinstance(value, list):
        return any(_has_ref(v, names) for v in value)
    return False


def node_entries(node: list) -> list[list]:
    """The entries of one Keras 2 node: ``[layer, node_index, tensor_index(, kwargs)]`` each. A node with one
    input may be stored as that entry alone."""
    if node and isinstance(node[0], str):
        node = [node]
    if not all(isinstance(e, list) and len(e) in (3, 4) and isinstance(e[0], str) for e in node):
        raise ValueError(f"a Keras 2 node of an unexpected form: {node!r:.200}")
    return node


def needs_keras3_form(node: list, names: frozenset) -> bool:
    entries = node_entries(node)
    return any(e[0] == CONSTANT or (len(e) == 4 and _has_ref(e[3], names)) for e in entries)


def _tensor(ref: list) -> dict:
    """A tensor reference in Keras 3's node form (the shape is a placeholder; Keras resolves the history)."""
    return {
        "class_name": "__keras_tensor__",
        "config": {"shape": [], "dtype": "float32", "keras_history": ref},
    }


def to_keras3_node(node: list, names: frozenset) -> dict:
    """A Keras 2 node whose call arguments hold tensors or constants, in Keras 3's node form."""
    entries = node_entries(node)
    kwargs = entries[0][3] if len(entries[0]) == 4 else {}

    def convert(value):
        if _is_ref(value, names):
            return _tensor(value)
        if isinstance(value, dict):
            return {k: convert(v) for k, v in value.items()}
        if isinstance(value, list):
            return [convert(v) for v in value]
        return value

    firsts = [e[2] if e[0] == CONSTANT else _tensor(list(e[:3])) for e in entries]
    return {"args": [firsts[0] if len(firsts) == 1 else firsts], "kwargs": convert(kwargs)}


def tf_op_layer(node: dict, names: frozenset) -> dict:
    """A TFOpLambda layer whose every tensor input arrives as one list, the rest kept in a template."""
    nodes = node["inbound_nodes"]
    if len(nodes) != 1:
        raise ValueError(
            f"TF op layer {node.get('name')!r} is called {len(nodes)} times; edgeattn supports one"
        )
    entries = node_entries(nodes[0])
    kwargs = entries[0][3] if len(entries[0]) == 4 else {}
    tensors: list[list] = []

    def slot(value):
        if _is_ref(value, names):
            tensors.append(list(value))
            return {TENSOR_SLOT: len(tensors) - 1}
        if isinstance(value, dict):
            return {k: slot(v) for k, v in value.items()}
        if isinstance(value, list):
            return [slot(v) for v in value]
        return value

    firsts = []
    for e in entries:
        if e[0] == CONSTANT:
            firsts.append(e[2])
        else:
            tensors.append(list(e[:3]))
            firsts.append({TENSOR_SLOT: len(tensors) - 1})
    template = {
        "args": [firsts[0] if len(firsts) == 1 else firsts],
        "kwargs": slot({k: v for k, v in kwargs.items() if k != "name"}),
    }
    refs = [_tensor(t) for t in tensors]
    config = {**node["config"], "arguments": template}
    return {
        **node,
        "config": config,
        "inbound_nodes": [{"args": [refs[0] if len(refs) == 1 else refs], "kwargs": {}}],
    }
