"""A minimal application: the shipped model, numpy + onnxruntime only (`pip install edgeattn`, no extras).

python examples/predict_app.py [models/seed.onnx]
"""

import sys

import numpy as np

from edgeattn.runtime import Predictor

predictor = Predictor(sys.argv[1] if len(sys.argv) > 1 else "models/seed.onnx")
x = np.random.default_rng(0).random((3, 10, 1), dtype=np.float32)  # 3 series of 10 steps
y, weights = predictor.predict(x, return_attention=True)
for series, prediction, w in zip(x[:, :, 0], y[:, 0], weights):
    print(f"max {series.max():.4f}  predicted {prediction:.4f}  attention peaks at step {w.argmax()}")
print("self-check:", "pass" if predictor.self_check()["passed"] else "FAIL")
