"""Running and deploying a checked ONNX file, without TensorFlow: ``quantize`` (int8/fp16 weights, standard ops),
``web`` and ``web_assets`` (the static page on onnxruntime-web), ``score`` and ``scoredata`` (data sets on
Ray), ``explain`` (attention weights per sample), ``bench`` and ``benchreport`` (latency and throughput side by
side; the floor), ``streambench`` (``bench --stream``: a streamed step against a whole-window run) and ``profile``
(onnxruntime's per-kernel profile). The Predictor itself is ``edgeattn.runtime``, one file an app can copy, with
``edgeattn.stream`` beside it (``Predictor.stream()``, ``Predictor.window(T)``).

What it may import: ``edgeattn.core``, ``edgeattn.graphs``, ``edgeattn.runtime`` and onnx/onnxruntime/numpy
(Ray and pyarrow for ``score``); not convert or cli. Where a contender needs TensorFlow (``bench --keras``),
it runs in a child process (``python -m edgeattn.convert.bench_child``), not in an import.
"""
