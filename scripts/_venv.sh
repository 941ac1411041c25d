# Sourced by demo.sh and test.sh: make sure .venv exists at the repository root and holds the project with
# the extras asked for ($1, e.g. "export,dev"). Installs again only when pyproject.toml changes or an extra is
# missing; what it installs is logged to .venv/pip-install.log.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
if [[ ! -x "$venv/bin/python" ]]; then
  py="$(command -v python3.11 || command -v python3)"
  echo "creating $venv with $($py --version)" >&2
  "$py" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip >/dev/null 2>&1
fi
stamp="$venv/.edgeattn-install"
hash="$(sha256sum "$root/pyproject.toml" | cut -c1-16)"
have_hash="" have_extras=""
[[ -f "$stamp" ]] && read -r have_hash have_extras < "$stamp" || true
[[ "$have_hash" == "$hash" ]] || have_extras=""
extras="$(tr ',' '\n' <<< "${have_extras},${1:-export}" | sed '/^$/d' | sort -u | paste -sd, -)"
if [[ "$have_hash" != "$hash" || "$extras" != "$have_extras" ]]; then
  echo "installing edgeattn[$extras] into $venv (the first time takes a minute or two and 1.7 GB)" >&2
  log="$venv/pip-install.log"
  if ! "$venv/bin/python" -m pip install --disable-pip-version-check -e "$root[$extras]" >"$log" 2>&1; then
    tail -n 20 "$log" >&2
    echo "error: installing edgeattn[$extras] into $venv failed (full log: $log)" >&2
    exit 2
  fi
  echo "$hash $extras" > "$stamp"
fi
export PATH="$venv/bin:$PATH"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-3}"
