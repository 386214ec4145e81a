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
    setup_test
    name="${1:?usage: ./run.sh bench NAME [args] (see benchmarks/)}"
    shift
    exec "$PY" "benchmarks/${name%.py}.py" "$@"
    ;;
  *)
    echo "usage: ./run.sh {setup|test|demo|bench NAME|main --config configs/X.py} [args...]" >&2
    exit 2
    ;;
esac
