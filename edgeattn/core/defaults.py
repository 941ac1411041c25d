"""Default values shared by the library's functions and the CLI's options (one place, so they cannot drift).

This module imports nothing: the CLI reads it to build ``--help`` without loading the library.
"""

from __future__ import annotations

# train
TASK = "find-max"
EPOCHS = 20
SEED = 0
TRAIN_SAMPLES = 20_000
# the length seeded inputs take on a free time axis when nothing says otherwise (the seed model's length)
TIME_STEPS = 10
# export
OPSET = 17
MAX_PARAMS = (
    1_000_000_000  # the most parameters a model config may imply before Keras builds it (4 GB float32)
)
MAX_FILE_MB = 4096  # the largest model or input file read (EDGEATTN_MAX_FILE_MB)
# Parity (export's gate and verify): a tensor passes when max |onnx - keras| <= ATOL + RTOL * scale, scale being
# its largest |keras| value. float32 rounding grows with a tensor's magnitude: the residual stream of the 5-block
# fixture (tests/fixtures/transformer, scale ~3e3) rounds by 2.4e-4, 120x inside 1e-4 + 1e-5 * 3e3 = 0.03, and
# no tensor there errs by more than 4.9e-7 of its scale; a weight moved by 0.05 in any block is 577x-855x over.
# Tensors of scale ~1 keep ~1.1e-4, as sharp as a fixed atol.
ATOL = 1e-4
# verify
RTOL = 1e-5
VERIFY_SAMPLES = 64  # the largest seeded batch
VERIFY_BATCHES = (1, 7, VERIFY_SAMPLES)
# quantize: the largest output error allowed, as a fraction of the output's scale
MAX_ERROR = {"int8": 0.02, "fp16": 0.01}
# explain
EXPLAIN_SAMPLES = 8
# bench
BENCH_BATCHES = (1, 256)
BENCH_THREADS = 1
BENCH_SECONDS = 2.0
# score
SCORE_BATCH_SIZE = 4096
# web
PORT = 8000
