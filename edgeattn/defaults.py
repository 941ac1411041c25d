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
ATOL = 1e-4  # export's parity gate and verify's tolerance (max abs error)
# verify
RTOL = 0.0
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
