#!/usr/bin/env bash
# The TensorFlow-free tests (tests/test_light.py) at the oldest supported pins (tests/oldest-pins.txt), in
# .venv-oldest: exactly those versions, then edgeattn with --no-deps. The venv is reused while the pins and
# pyproject.toml are unchanged. Called by scripts/test.sh; extra arguments go to pytest.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv-oldest"
pins="$root/tests/oldest-pins.txt"
stamp="$venv/.edgeattn-pins"
hash="$(cat "$pins" "$root/pyproject.toml" | sha256sum | cut -c1-16)"
if [[ ! -x "$venv/bin/python" || "$(cat "$stamp" 2>/dev/null)" != "$hash" ]]; then
  rm -rf "$venv"
  py="$(command -v python3.11 || command -v python3)"
  echo "creating $venv with the oldest supported pins ($(grep -v '^#' "$pins" | paste -sd' '))" >&2
  "$py" -m venv "$venv"
  log="$venv/pip-install.log"
  if ! { "$venv/bin/python" -m pip install --disable-pip-version-check -r "$pins" &&
         "$venv/bin/python" -m pip install --disable-pip-version-check --no-deps -e "$root"; } >"$log" 2>&1; then
    tail -n 20 "$log" >&2
    echo "error: installing the oldest pins into $venv failed (full log: $log)" >&2
    exit 2
  fi
  echo "$hash" > "$stamp"
fi
cd "$root"
echo "tests at the oldest pins: $("$venv/bin/python" -c 'import numpy, onnxruntime, onnx, click; print(f"numpy {numpy.__version__}, onnxruntime {onnxruntime.__version__}, onnx {onnx.__version__}, click {click.__version__}")')" >&2
PATH="$venv/bin:$PATH" "$venv/bin/python" -m pytest -p no:cacheprovider tests/test_light.py "$@"
