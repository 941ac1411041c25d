"""The structure check fed graphs that must fail it: a Loop, a Scan, a fixed batch axis, wrong output names.
Each cause is named; export raises them as CheckFailedError (exit 1) and writes nothing."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from edgeattn.graphs import graph


def model(nodes, batch="batch", output="y", initializers=()):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3])
    y = helper.make_tensor_value_info(output, TensorProto.FLOAT, [batch, 3])
    g = helper.make_graph(nodes, "g", [x], [y], list(initializers))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def body(scan: bool):
    """A pass-through loop/scan body."""
    if scan:
        state = helper.make_tensor_value_info("s", TensorProto.FLOAT, [3])
        item = helper.make_tensor_value_info("i", TensorProto.FLOAT, [3])
        outs = [helper.make_tensor_value_info("s_out", TensorProto.FLOAT, [3])]
        nodes = [helper.make_node("Add", ["s", "i"], ["s_out"])]
        return helper.make_graph(nodes, "body", [state, item], outs)
    inputs = [
        helper.make_tensor_value_info("n", TensorProto.INT64, []),
        helper.make_tensor_value_info("c", TensorProto.BOOL, []),
        helper.make_tensor_value_info("v", TensorProto.FLOAT, None),
    ]
    outs = [
        helper.make_tensor_value_info("c_out", TensorProto.BOOL, []),
        helper.make_tensor_value_info("v_out", TensorProto.FLOAT, None),
    ]
    nodes = [helper.make_node("Identity", ["c"], ["c_out"]), helper.make_node("Identity", ["v"], ["v_out"])]
    return helper.make_graph(nodes, "body", inputs, outs)


def test_a_loop_is_named():
    consts = [
        numpy_helper.from_array(np.array(2, np.int64), "M"),
        numpy_helper.from_array(np.array(True), "cond"),
    ]
    loop = helper.make_node("Loop", ["M", "cond", "x"], ["y"], name="rnn_loop", body=body(scan=False))
    problems = graph.check_structure(model([loop], initializers=consts))
    assert any("'rnn_loop' is a Loop" in p and "not fused" in p for p in problems), problems


def test_a_scan_is_named():
    init = numpy_helper.from_array(np.zeros(3, np.float32), "s0")
    scan = helper.make_node(
        "Scan", ["s0", "x"], ["y"], name="rnn_scan", body=body(scan=True), num_scan_inputs=1
    )
    problems = graph.check_structure(model([scan], initializers=[init]))
    assert any("'rnn_scan' is a Scan" in p for p in problems), problems


def test_a_fixed_batch_axis_is_named():
    problems = graph.check_structure(model([helper.make_node("Identity", ["x"], ["y"])], batch=1))
    assert any("'x' has a fixed batch axis" in p for p in problems), problems
    assert any("'y' has a fixed batch axis" in p for p in problems), problems


def test_wrong_output_names_are_named():
    ok = model([helper.make_node("Identity", ["x"], ["y"])])
    assert graph.check_structure(ok, expect_outputs=["y"]) == []  # the check can pass
    wrong = model([helper.make_node("Identity", ["x"], ["out"])], output="out")
    problems = graph.check_structure(wrong, expect_outputs=["y"])
    assert any("out" in p and "'y'" in p for p in problems), problems
