"""Rewriting and checking ONNX graphs: what edgeattn does to a converted graph and how it proves it right.

``facts`` (summaries and structure checks, read-only), ``graph`` (the clean-up), ``onnxfile`` (reading a file once, sessions, metadata),
``cases`` (seeded inputs, tolerances, the parity report), the speed rewrites (``shapes``, ``layouts``, ``rows``,
``algebra``, ``fusion``, ``matmuls``, ``convs``: each checked against the graph before it and kept only when
the outputs agree), ``ortfusion`` (onnxruntime's own fused kernels, in memory only), ``ortformat``,
``streamstates`` (a fused recurrent node's state as graph inputs and outputs; the ``edgeattn.stream`` key) and
``stepgraph`` (a step model's graph in fewer kernels).

What it may import: onnx, onnxruntime, numpy, ``edgeattn.core`` and ``edgeattn.runtime``; not deploy,
convert or cli, and never TensorFlow or Keras (a reference model is a function handed in).
"""
