#!/usr/bin/env bash
# Run the tests on a fresh machine: makes .venv, installs the project with the cpu, zoo, dev,
# serve and ray extras (and plot, to test --plot), lints, checks the import layering, and runs
# pytest. Tests marked network fetch pinned wheels (TensorRT bindings, nvidia-pytriton) once into
# .cache/.
# Extra arguments go to pytest (e.g. -m "not slow").
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh "cpu,zoo,dev,plot,serve,ray"
ruff check .
ruff format --check .
lint-imports  # the layers and contracts in .importlinter
# The tests run shuffled (pytest-randomly); the order's seed is printed even under -q, and
# `--randomly-seed=N` replays it.
order=()
if [[ " $* " != *"no:randomly"* && " $* " != *"--randomly-seed"* ]]; then
  seed="${RANDOMLY_SEED:-$((RANDOM * 32768 + RANDOM))}"
  echo "test order: --randomly-seed=$seed"
  order=(--randomly-seed="$seed")
fi
python -m pytest ${order[@]+"${order[@]}"} "$@"
