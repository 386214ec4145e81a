#!/usr/bin/env bash
# One entry point for every set-up step: ./run.sh {setup|test|demo|bench NAME|main} [args...]
# VENV may point at an existing virtual environment (default: .venv beside this file).
set -euo pipefail
cd "$(dirname "$0")"
VENV="${VENV:-.venv}"
PY="$VENV/bin/python"

setup() {
  if [ ! -x "$PY" ]; then
    python3 -m venv "$VENV"
  fi
  "$PY" -m pip install -q --upgrade pip
  "$PY" -m pip install -q -r requirements.txt
  # The package itself, editable: `sem-repa` and `sem-repa-convert` then work from any folder.
  # setuptools 70.1 carries bdist_wheel itself; a fresh venv's 65.x needs the wheel package for it.
  "$PY" -m pip install -q "setuptools>=70.1" wheel
  if ! "$PY" -m pip install -q --no-deps --no-build-isolation -e . > "$VENV/editable-install.log" 2>&1; then
    cat "$VENV/editable-install.log" >&2
    exit 1
  fi
}

setup_test() {
  setup
  # torch is a test-only reference; 2.13.0 resolves to a CPU build on the project machines.
  "$PY" -m pip install -q -r requirements-test.txt
}

# A python whose JAX sees a GPU (the lent GPU image's python3 has CUDA JAX), or nothing.
gpu_python() {
  local py
  for py in "$PY" python3; do
    if command -v "$py" > /dev/null 2>&1 \
        && "$py" -c "import jax, sys; sys.exit(jax.default_backend() != 'gpu')" > /dev/null 2>&1; then
      echo "$py"
      return
    fi
  done
}

# The GPU suite: where a python's JAX sees a GPU (the lent GPU image has one, and no internet) it
# runs with that python as it is, plus the wheels of requirements-gpu-offline.txt if .whl/ was
# carried there; otherwise --install first sets up the venv with requirements-gpu.txt (internet
# needed); with neither, the ordinary venv runs it (on CPU only --smoke goes further).
gpu_suite() {
  local install=0 arg py args=()
  for arg in "$@"; do
    if [ "$arg" = --install ]; then install=1; else args+=("$arg"); fi
  done
  py="$(gpu_python)"
  if [ -z "$py" ] && [ "$install" = 1 ]; then
    setup_test
    "$PY" -m pip install -q -r requirements-gpu.txt
    py="$(gpu_python)"
  fi
  if [ -z "$py" ]; then
    setup_test
    py="$PY"
  elif [ -d .whl ]; then
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/sem_repa_site .whl/*.whl
    export PYTHONPATH="/tmp/sem_repa_site${PYTHONPATH:+:$PYTHONPATH}"
  fi
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
  exec "$py" benchmarks/gpu_suite.py "${args[@]}"
}

cmd="${1:-help}"
shift || true
case "$cmd" in
  setup) setup ;;
  test)
    setup_test
    # Tests run on CPU; 8 simulated devices are set up per test where sharding is checked.
    export JAX_PLATFORMS=cpu
    set +e
    "$PY" -m pytest tests -q -n "${PYTEST_WORKERS:-2}" --durations=15 "$@"
    rc=$?
    set -e
    # pytest exits 5 when it collected nothing: that is a failure for this project.
    exit $rc
    ;;
  demo)
    setup
    exec "$PY" -m sem_repa_jax.main --config configs/demo.py "$@"
    ;;
  main)
    setup
    exec "$PY" -m sem_repa_jax.main "$@"
    ;;
  bench)
    name="${1:?usage: ./run.sh bench NAME [args] (see benchmarks/)}"
    shift
    if [ "${name%.py}" = gpu_suite ]; then
      gpu_suite "$@"
    fi
    setup_test
    exec "$PY" "benchmarks/${name%.py}.py" "$@"
    ;;
  gpu-wheels)
    # Here, with internet: the wheels an offline GPU machine needs for the suite, into .whl/.
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
      --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
      -d .whl -r requirements-gpu-offline.txt
    ;;
  *)
    echo "usage: ./run.sh {setup|test|demo|bench NAME|gpu-wheels|main --config configs/X.py} [args...]" >&2
    exit 2
    ;;
esac
