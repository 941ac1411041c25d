"""The TensorFlow side of ``edgeattn bench``: run as ``python -m edgeattn.convert.bench_child THREADS``; nothing imports
this module.

TensorFlow fixes its thread pools when its runtime starts, so the contenders that run on it (the Keras model
under ``tf.function``, eagerly, and converted to LiteRT) live in this child process, whose TensorFlow is given
the thread count before anything else happens. The parent sends one JSON request per line on stdin and reads
one JSON reply per line; the timing itself happens here, in turns with the parent's own contenders.

Requests: ``load`` (source, custom_layers, eager, litert), ``prepare`` (batch, inputs: an .npz of the very
inputs the parent times its contenders with; writes each contender's first output to ``outputs``), ``time``
(name, seconds) and ``quit``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from edgeattn.core.errors import (  # light: no TensorFlow before THREADS is set
    EdgeAttnError,
    as_reply,
    first_line,
)

THREADS = int(sys.argv[1]) if len(sys.argv) > 1 else 1
os.environ["TF_NUM_INTRAOP_THREADS"] = str(THREADS)
os.environ["TF_NUM_INTEROP_THREADS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

TF_FUNCTION = "Keras under tf.function"
EAGER = "Keras eager"
LITERT = "LiteRT (XNNPACK)"


class Child:
    def __init__(self) -> None:
        import contextlib

        self.stack = contextlib.ExitStack()  # closed when the child ends
        self.model = None
        self.eager = self.litert = False
        self.calls: dict[str, object] = {}

    def load(
        self,
        source: str,
        custom_layers: list[str],
        eager: bool,
        litert: bool,
        input_shapes=(),
        output_order=None,
    ) -> dict:
        import tensorflow as tf

        # Before the first op: afterwards TensorFlow refuses ("cannot be modified after initialization").
        tf.config.threading.set_intra_op_parallelism_threads(THREADS)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        from edgeattn.convert import tfgraph
        from edgeattn.convert.loading import InputShape, load_model

        if tfgraph.is_graph_savedmodel(source):  # no Keras config: time the serving signature itself
            from edgeattn.core.files import private_copy

            copy = self.stack.enter_context(private_copy(source))  # what was checked is what is loaded
            found = tfgraph.check_folder(copy, shown=Path(source))
            self.model = _Signature(tfgraph.load(copy, found, shown=Path(source)), output_order)
        else:
            shapes = tuple(InputShape(name, dtype, tuple(shape)) for name, dtype, shape in input_shapes)
            self.model = load_model(source, custom_layers=tuple(custom_layers), input_shapes=shapes).model
        self.eager, self.litert = eager, litert
        intra = tf.config.threading.get_intra_op_parallelism_threads()
        inter = tf.config.threading.get_inter_op_parallelism_threads()
        return {
            "threads": {TF_FUNCTION: intra, EAGER: intra},
            "notes": {"Keras": f"TensorFlow {tf.__version__}, Keras {_version('keras')}; intra-op "
                      f"threads {intra}, inter-op {inter} (read back from tf.config)"},
        }  # fmt: skip

    def prepare(self, batch: int, inputs: str, outputs: str) -> dict:
        import numpy as np
        import tensorflow as tf

        with np.load(inputs) as data:
            feed = {name: data[name] for name in data.files}
        names = [t.name.split(":")[0] for t in self.model.inputs]
        ordered = [feed[n] for n in names] if set(names) <= set(feed) else list(feed.values())
        specs = [tf.TensorSpec((None, *x.shape[1:]), tf.as_dtype(x.dtype), name=f"input_{i}")
                 for i, x in enumerate(ordered)]  # fmt: skip
        model = self.model

        def call(*tensors):
            return model(list(tensors) if len(tensors) > 1 else tensors[0], training=False)

        tensors = [tf.constant(x) for x in ordered]
        traced = tf.function(call, input_signature=specs)
        self.calls = {TF_FUNCTION: lambda: _first(traced(*tensors))}
        if self.eager:
            self.calls[EAGER] = lambda: _first(call(*tensors))
        reply: dict = {"skipped": {}, "notes": {}, "threads": {}}
        if self.litert:
            try:
                self.calls[LITERT], reply["notes"]["LiteRT"] = _litert(call, ordered)
                reply["threads"][LITERT] = THREADS
            except Exception as exc:  # conversion failures come in many types
                reply["skipped"][LITERT] = first_line(exc)
        firsts = {name: np.asarray(fn()) for name, fn in self.calls.items()}
        np.savez(outputs, **{f"c{i}": v for i, v in enumerate(firsts.values())})
        reply["contenders"] = list(firsts)
        return reply

    def time(self, name: str, seconds: float) -> dict:
        fn = self.calls[name]
        start = time.perf_counter()
        times: list[int] = []
        while time.perf_counter() - start < seconds or len(times) < 3:
            t0 = time.perf_counter_ns()
            fn()
            times.append(time.perf_counter_ns() - t0)
        return {"times": times}


class _Signature:
    """A SavedModel's serving signature called as the contenders call a Keras model: ``model(x or [xs])``
    returns its outputs in the ONNX model's order (the signature's output keys, as recorded at export)."""

    def __init__(self, source, order) -> None:
        import types

        self.source = source
        self.order = order or source.output_keys
        self.inputs = [types.SimpleNamespace(name=name) for name in source.input_names]

    def __call__(self, x, training=False):
        xs = x if isinstance(x, list) else [x]
        outputs = self.source.function(**dict(zip(self.source.input_keys, xs)))
        return [outputs[key] for key in self.order]


def _first(result):
    return result[0] if isinstance(result, (list, tuple)) else result


def _version(module: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(module)
    except PackageNotFoundError:
        return "?"


def _litert(call, ordered) -> tuple:
    """A call of the LiteRT interpreter (ai-edge-litert when installed, else TensorFlow's) with XNNPACK on
    these inputs, and the runtime's name. The batch is fixed: LiteRT lowers the LSTM's tensor lists only
    when every shape is static."""
    import tensorflow as tf

    try:
        from ai_edge_litert.interpreter import Interpreter

        runtime = f"ai-edge-litert {_version('ai-edge-litert')}"
    except ImportError:
        Interpreter = tf.lite.Interpreter
        runtime = f"tf.lite.Interpreter (TensorFlow {tf.__version__})"
    from edgeattn.deploy.bench import litert_bytes

    specs = [tf.TensorSpec(x.shape, tf.as_dtype(x.dtype), name=f"input_{i}") for i, x in enumerate(ordered)]
    concrete = tf.function(call, input_signature=specs).get_concrete_function()
    interpreter = Interpreter(model_content=litert_bytes(concrete), num_threads=THREADS)
    interpreter.allocate_tensors()
    details = interpreter.get_input_details()
    by_name = {}
    for i, x in enumerate(ordered):
        match = [d for d in details if f"input_{i}" in d["name"]]
        by_name[(match[0] if len(match) == 1 else details[i])["index"]] = x
    out = interpreter.get_output_details()[0]["index"]

    def run():
        for index, x in by_name.items():
            interpreter.set_tensor(index, x)
        interpreter.invoke()
        return interpreter.get_tensor(out)

    return run, f"{runtime}, {THREADS} thread(s) given to the interpreter and its XNNPACK delegate"


def main() -> None:
    reply_out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # whatever TensorFlow prints goes to stderr; stdout carries the replies only
    child = Child()
    with child.stack:
        _serve(child, reply_out)


def _serve(child: Child, reply_out) -> None:
    for line in sys.stdin:
        request = json.loads(line)
        command = request.pop("cmd")
        if command == "quit":
            break
        try:
            reply = getattr(child, command)(**request)
        except EdgeAttnError as exc:
            reply = as_reply(exc)
        except Exception as exc:  # TensorFlow's and LiteRT's own kinds
            reply = {"error": f"{type(exc).__name__}: {first_line(exc)}"}
        reply_out.write(json.dumps(reply) + "\n")
        reply_out.flush()


if __name__ == "__main__":
    main()
