#!/usr/bin/env bash
# The main job on the shipped model: export -> verify -> predict -> quantize -> bench, printing the figures.
# Creates .venv (with the [export] extra) when it is missing. Writes only under demo-out/.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_venv.sh "export"
out=demo-out
mkdir -p "$out"
step() { printf '\n$ %s\n' "$*"; "$@"; }
step edgeattn export models/seed.keras -o "$out/seed.onnx" --attention-weights --force
step edgeattn verify "$out/seed.onnx" --keras models/seed.keras
step edgeattn verify "$out/seed.onnx" --golden
python - "$out" <<'PY'
import sys
import numpy as np
from edgeattn.convert.tasks import find_max_data
x, y = find_max_data(5, seed=2026)
np.save(f"{sys.argv[1]}/x.npy", x)
np.save(f"{sys.argv[1]}/y_true.npy", y)
PY
step edgeattn predict "$out/seed.onnx" "$out/x.npy" -o "$out/y.npy" --force
python - "$out" <<'PY'
import sys
import numpy as np
from edgeattn.runtime import Predictor
out = sys.argv[1]
p = Predictor(f"{out}/seed.onnx")
x, y_true, y = np.load(f"{out}/x.npy"), np.load(f"{out}/y_true.npy"), np.load(f"{out}/y.npy")
_, w = p.predict(x, return_attention=True)
print("\nsample  true max  predicted  argmax(x)  argmax(attention)")
for i in range(len(x)):
    print(f"{i:>6}  {y_true[i, 0]:8.4f}  {y[i, 0]:9.4f}  {int(x[i, :, 0].argmax()):>9}  {int(w[i].argmax()):>17}")
PY
step edgeattn quantize "$out/seed.onnx" --mode int8 -o "$out/seed.int8.onnx" --force
step edgeattn bench "$out/seed.onnx" --batch 1,256 --seconds 1
echo
echo "demo: done (files in $out/)"
