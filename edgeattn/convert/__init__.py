"""Reading Keras files and converting them (TensorFlow, Keras, tf2onnx). Reading: ``loading`` (the flow),
``modelconfig`` and ``configcheck`` (a file's config read and checked as data before Keras sees it),
``inputspec``, ``legacy``, ``legacynodes`` and ``legacyload`` (Keras 2-era files), ``savedmodel``, ``tfgraph``,
``tfgraphscan`` and ``safeops`` (SavedModel folders), ``textmodel`` and ``textdata`` (TextVectorization
models), ``custom_layers``, ``kerasmodel``, ``layers`` (edgeattn's own layers), ``params``, ``tfops``.
Converting: ``recurrent`` and ``standins`` (layers converted as the fewest kernels), ``tfconvert`` (tf2onnx),
``cleanup``, ``provenance`` and ``export`` (the whole export), ``written`` (the export's options, result and
atomic write), ``verify`` (parity against Keras). Streaming: ``streaming`` (a model rebuilt to run one step at a
time, or as a stateful model; the layers refused), ``streamexport`` (its export), ``streamverify`` (its check,
step by step against Keras on the whole sequence). Also ``tasks`` (the training tasks), and the child sides
of the sandbox and of bench (``sandbox_child``, ``bench_child``, run as ``python -m``).

What it may import: TensorFlow, Keras, tf2onnx and every folder below it: ``edgeattn.core``,
``edgeattn.graphs``, ``edgeattn.deploy``, and ``edgeattn.runtime``; not cli. Heavy imports happen inside
the functions that need them, so that importing a module here stays cheap.
"""
