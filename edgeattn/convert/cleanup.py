"""What export does to the converted graph before its parity check, for Keras models and graph SavedModel
folders alike (``edgeattn.convert.export``): name the model's outputs (``y``, ``attention_weights``), run the
rewrites that only make it faster (each checks its own result; one that fails is skipped, never the export),
and refuse a graph that is not fit for the edge, listing every problem (``CheckFailedError``).
"""

from __future__ import annotations

import functools

import onnx

from edgeattn.convert import verify
from edgeattn.core.errors import CheckFailedError
from edgeattn.graphs import convs, fusion, graph, layouts, matmuls, rows, shapes

PREDICTION_OUTPUT = "y"


def _name_outputs(proto: onnx.ModelProto, attention_weights: bool, count: int) -> list[str]:
    """Rename the first ``count`` graph outputs (the model's; layer outputs may follow): ``y`` (or Keras's
    names when there are several), then ``attention_weights``."""
    from edgeattn.runtime import ATTENTION_OUTPUT

    outputs = [o.name for o in proto.graph.output][:count]
    predictions = outputs[:-1] if attention_weights else outputs
    if len(predictions) == 1:
        graph.rename_value(proto, predictions[0], PREDICTION_OUTPUT)
    if attention_weights:
        graph.rename_value(proto, outputs[-1], ATTENTION_OUTPUT)
    return [o.name for o in proto.graph.output][:count]


def tidied(proto: onnx.ModelProto, probes: list[str], count: int) -> tuple[onnx.ModelProto, list]:
    """The converted graph's first clean-up: zero initial states dropped, a last step read from the final
    state, onnx's basic optimizations; the outputs after the model's ``count`` (one per probed layer) dropped
    again. Returns the graph and the (layer, tensor) pairs those outputs named."""
    graph.drop_zero_initial_states(proto)
    graph.last_step_from_final_state(proto)
    proto = graph.optimize_basic(proto)
    layer_map = [(name, o.name) for name, o in zip(probes, proto.graph.output[count:])]
    del proto.graph.output[count:]
    graph.prune_dead(proto)
    return proto, layer_map


def _speed_rewrites(proto: onnx.ModelProto, vocab: int | None, steps: int | None) -> None:
    """The graph rewrites that only make the model faster (constant reshape targets, LayerNormalization, plain
    token lookups, fewer kernels around attention's products). Each checks its own result; one that fails in
    any other way is skipped, never the export."""

    @functools.cache  # the same seeded inputs for every rewrite that checks on them (they keep the inputs)
    def feeds() -> list[dict]:
        cases = verify.make_cases(
            verify.input_specs(proto), batches=(2, 5), vocab=vocab, trained_length=steps
        )
        return [case.feed for case in cases]

    for rewrite in (
        lambda: shapes.freeze_reshapes(proto, vocab, steps),
        lambda: rows.unflatten_rows(proto, vocab, steps),
        lambda: layouts.merge_layout_chains(proto, vocab, steps),
        lambda: layouts.squeeze_transposes(proto, vocab, steps),
        lambda: shapes.freeze_reshapes(proto, vocab, steps),
        lambda: shapes.freeze_shapes(proto, vocab, steps),
        lambda: fusion.fuse_layer_norms(proto, feeds()),
        lambda: fusion.fuse_gelus(proto, feeds()),
        lambda: convs.conv1d(proto, feeds()),
        lambda: fusion.plain_gather_indices(proto),
        lambda: matmuls.split_concat_products(proto, feeds()),
        lambda: matmuls.row_scores(proto, feeds()),
    ):
        before = onnx.ModelProto()
        before.CopyFrom(proto)
        try:
            rewrite()
        except Exception:  # onnx and onnxruntime raise many kinds; the graph as it was is still right
            proto.CopyFrom(before)


def _check_structure(proto: onnx.ModelProto, recurrent: int | None, outputs: list[str]) -> None:
    """Refuse a graph that is not fit for the edge (see ``graph.check_structure``), listing every problem."""
    problems = graph.check_structure(proto, expect_recurrent=recurrent, expect_outputs=outputs)
    if problems:
        message, details = _listed("the exported graph is not fit for the edge", problems)
        raise CheckFailedError(message, hint="nothing was written", details=details)


def _listed(what: str, problems: list[str]) -> tuple[str, list[str]]:
    """(message, details) for an error about one or several problems: one line each."""
    if len(problems) == 1:
        return f"{what}: {problems[0]}", []
    return f"{what}: {len(problems)} problems:", problems
