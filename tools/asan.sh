#!/usr/bin/env bash
# The test suite under AddressSanitizer: builds the Cython engine with
# -fsanitize=address in a scratch copy of this checkout, then runs pytest there
# with libasan preloaded (CPython itself is not instrumented).
#
#   bash tools/asan.sh [PYTEST ARGS...]       (default: -m "not slow" -x -q)
#
# Skipped under ASan: the nvcc compile tests (nvcc crashes under the libasan
# preload) and the CUDA emulation (its g++-built library is not instrumented
# and loads fine, but the emulation is slow and exercises no Cython code), and
# the tests that run OpenVINO, JAX or torch.onnx.export (they abort under the
# libasan preload).
# Leak detection is off: CPython keeps its allocations to the end.  A finding
# prints "ERROR: AddressSanitizer" with the stack and fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
work=$(mktemp -d "${TMPDIR:-/tmp}/gru_cy-asan.XXXXXX")
trap 'rm -rf "$work"' EXIT
git ls-files -z | xargs -0 -I{} cp --parents {} "$work"/
cd "$work"
# the build's requirements (pyproject.toml [build-system]), where missing
$PY -c "import Cython" 2>/dev/null || $PY -m pip install --quiet "Cython>=3"
GRU_CY_ASAN=1 $PY setup.py build_ext --inplace -j 2 > build.log 2>&1 || { tail -40 build.log; exit 1; }
libasan=$(gcc -print-file-name=libasan.so)
args=("$@")
[ ${#args[@]} -eq 0 ] && args=(-m "not slow" -x -q)
GRU_CY_UNDER_ASAN=1 LD_PRELOAD="$libasan" ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 \
    PYTHONPATH="$work" \
    $PY -m pytest -p no:cacheprovider "${args[@]}" \
    --deselect tests/test_cuda_compile.py --ignore tests/test_cuda_emulation.py
