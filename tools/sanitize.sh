#!/usr/bin/env bash
# Builds the compiled core with gcc's AddressSanitizer and UndefinedBehaviorSanitizer, runs the
# C++ core test with LeakSanitizer on, then the given Python tests against the sanitized module
# (the ASan runtime preloaded into Python). Any report fails the run.
#
#   tools/sanitize.sh                      # the default test selection below
#   tools/sanitize.sh tests/ops -k masking # any pytest arguments, paths relative to the repo
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
py=$(command -v "${PYTHON:-python}")
build=${PYSSL_SANITIZE_BUILD:-$root/build-sanitize}
tests=("$@")
[ ${#tests[@]} -gt 0 ] || tests=(tests/ops tests/kernels/test_contrastive_cpu.py tests/robustness)

cmake -S "$root" -B "$build" -G Ninja -DPYSSL_CUDA=OFF -DPYSSL_BUILD_TESTS=ON \
  -DPYSSL_SANITIZE=address,undefined -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -Dpybind11_DIR="$("$py" -m pybind11 --cmakedir)" -DPython_EXECUTABLE="$py" >/dev/null
cmake --build "$build" -j2

export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
echo "== C++ core test under ASan + UBSan + LeakSanitizer"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 ctest --test-dir "$build" --output-on-failure

echo "== Python tests against the sanitized module: ${tests[*]}"
# a copy of the package with the sanitized module in it, imported from the working directory
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
cp -r "$root/pyssl" "$stage/"
rm -f "$stage"/pyssl/_C*.so
cp "$build"/_C*.so "$stage/pyssl/"
args=()
for t in "${tests[@]}"; do [[ $t == tests* ]] && args+=("$root/$t") || args+=("$t"); done
cd "$stage"
# Python and torch are not instrumented: leaks are checked on the C++ core above and by
# tests/robustness/test_leaks.py; here ASan checks every memory access of the kernels.
LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libubsan.so)" \
  ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:halt_on_error=1 \
  "$py" -m pytest -q -p no:cacheprovider -c "$root/pyproject.toml" --rootdir "$root" "${args[@]}"
echo "== sanitizers: no report"
