#!/usr/bin/env bash
# Sanitizer run of the C++ core (AddressSanitizer + UndefinedBehaviorSanitizer), in a temporary
# build folder, in about five minutes on two cores:
#   1. the core and its C++ oracles (kernel_oracle, compact_oracle) built with -fsanitize=address,undefined, run through ctest;
#   2. the Python extension built the same way and a slice of pytest (tests/test_scoring.py,
#      tests/test_simd.py, tests/test_core_hardening.py, tests/test_bf16_bound.py) run against it
#      with libasan and libstdc++ preloaded (PFM_SANITIZE_PYTHON=0 skips it);
#   3. where clang is installed, the libFuzzer harness cpp/tests/fuzz_core.cpp run for
#      PFM_FUZZ_SECONDS (default 60; 0 skips it) over a copy of its seed corpus.
# Any sanitizer report fails the run (halt_on_error; UBSan does not recover).
# Run from anywhere: bash .ci/sanitize.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${PYTHON:-python3}
JOBS=${JOBS:-2}
TMP=$(mktemp -d "${TMPDIR:-/tmp}/pfm-sanitize.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
# Configure and build quietly (the log is shown only when it fails).
build() {
  local dir=$1 target=$2
  shift 2
  if ! { cmake -S "$ROOT" -B "$dir" "$@" && cmake --build "$dir" -j "$JOBS" --target "$target"; } >"$dir.log" 2>&1; then
    tail -60 "$dir.log"
    echo "sanitize: building $target failed" >&2
    exit 1
  fi
}
export ASAN_OPTIONS=detect_leaks=0:halt_on_error=1:abort_on_error=1:strict_string_checks=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

echo "== 1/3 core + the C++ oracles (kernel_oracle, compact_oracle) with ASan/UBSan (ctest)"
build "$TMP/core" all -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPFM_BUILD_TESTS=ON -DPFM_SANITIZE=ON
(cd "$TMP/core" && ctest --output-on-failure)

if [ "${PFM_SANITIZE_PYTHON:-1}" = 1 ]; then
echo "== 2/3 Python extension with ASan/UBSan, pytest slice"
# pybind11 is a build requirement, not installed in the environment by a normal install
"$PY" -c "import pybind11" 2>/dev/null || "$PY" -m pip install -q "pybind11>=3.0,<3.2"
PYBIND11_DIR=$("$PY" -c "import pybind11; print(pybind11.get_cmake_dir())")
build "$TMP/ext" _core -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSKBUILD=ON -DPFM_SANITIZE=ON \
  -Dpybind11_DIR="$PYBIND11_DIR" -DPython_EXECUTABLE="$(command -v "$PY")"
mkdir -p "$TMP/pkg"
cp -r "$ROOT/src/pyfacematch" "$TMP/pkg/"
rm -f "$TMP"/pkg/pyfacematch/_core*.so
cp "$TMP"/ext/_core*.so "$TMP/pkg/pyfacematch/"
LIBASAN=$(${CXX:-c++} -print-file-name=libasan.so)
# libstdc++ preloaded too: python is not linked against it, and ASan's __cxa_throw interceptor
# must find the real one at start-up, or the first C++ exception aborts ("real___cxa_throw")
LIBSTDCXX=$(${CXX:-c++} -print-file-name=libstdc++.so)
# the copy must be the package imported (not an installed or editable one)
PYTHONPATH="$TMP/pkg" LD_PRELOAD="$LIBASAN $LIBSTDCXX" "$PY" -c "
import sys, pyfacematch._core as c
sys.exit(0 if c.__file__.startswith('$TMP/pkg') else 'imported ' + c.__file__ + ', not the sanitized build')"
(cd "$TMP" && PYTHONPATH="$TMP/pkg" LD_PRELOAD="$LIBASAN $LIBSTDCXX" "$PY" -m pytest -q -x -p no:cacheprovider \
  --rootdir "$ROOT" -c "$ROOT/pyproject.toml" \
  "$ROOT/tests/test_scoring.py" "$ROOT/tests/test_simd.py" "$ROOT/tests/test_core_hardening.py" \
  "$ROOT/tests/test_bf16_bound.py")

else
  echo "== 2/3 Python extension with ASan/UBSan: skipped (PFM_SANITIZE_PYTHON=0)"
fi

echo "== 3/3 libFuzzer harness (clang)"
SECONDS_FUZZ=${PFM_FUZZ_SECONDS:-60}
if [ "$SECONDS_FUZZ" = 0 ]; then
  echo "skipped (PFM_FUZZ_SECONDS=0)"
elif ! command -v clang++ >/dev/null; then
  echo "skipped: clang++ is not installed (apt-get install clang)"
else
  build "$TMP/fuzz" fuzz_core -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=clang++ -DPFM_FUZZ=ON
  cp -r "$ROOT/cpp/tests/fuzz_corpus/core" "$TMP/corpus"
  "$TMP/fuzz/fuzz_core" -max_total_time="$SECONDS_FUZZ" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    "$TMP/corpus" 2>&1 | grep -E "^(#[0-9]+ +DONE|stat::number_of_executed_units|stat::peak_rss|==[0-9]+==ERROR|SUMMARY)" || true
  test "${PIPESTATUS[0]}" -eq 0
fi
echo "sanitize: all passed"
