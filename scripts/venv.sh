# Sourced by demo.sh and test.sh: make (or reuse) .venv and install the project with the given
# extras. torch is pinned to the CPU build first, so the zoo extra's range installs nothing more.
# Usage: source scripts/venv.sh "cpu,zoo,dev"
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${FUSEDINF_VENV:-$repo/.venv}"
extras="$1"
python_bin="${PYTHON:-python3}"
if [ ! -x "$venv/bin/python" ]; then
  echo "creating $venv"
  "$python_bin" -m venv "$venv"
fi
# shellcheck disable=SC1091
source "$venv/bin/activate"
python -m pip install --quiet --upgrade pip
if [[ ",$extras," == *",zoo,"* ]]; then
  python -m pip install --quiet "torch==2.13.0"
fi
python -m pip install --quiet -e "$repo[$extras]"
