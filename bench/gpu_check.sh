#!/usr/bin/env bash
# On a machine with a CUDA GPU: build pyssl with its CUDA C++ kernels for the local GPU, run the
# tests that exercise the GPU backends (Triton compiled, not interpreted; CUDA C++), then the GPU
# timings. Logs go to ${OUT:-gpu-check}/.
#   bash bench/gpu_check.sh [tests|timings|all] [--quick]
# On an H200 the build takes ~25 s, the tests 5-7 min (Triton compiles), the timings ~4 min.
set -uo pipefail
part=${1:-all}; shift || true
cd "$(dirname "$0")/.."
out=${OUT:-gpu-check}; mkdir -p "$out"
export PYTHONUNBUFFERED=1 CMAKE_BUILD_PARALLEL_LEVEL=$(nproc)
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a "$out/gpu.txt"
t0=$SECONDS
python3 -m pip install -v --no-build-isolation --no-deps . -Ccmake.define.PYSSL_CUDA=ON -Ccmake.define.CMAKE_CUDA_ARCHITECTURES=90 \
  > "$out/build.log" 2>&1 || { tail -40 "$out/build.log"; exit 1; }
echo "build: $((SECONDS - t0)) s, $(grep -c "warning:" "$out/build.log") compiler warnings (log: build.log)"
grep -m5 "warning:" "$out/build.log"
(cd / && python3 -m pyssl info) | tee -a "$out/gpu.txt"
if [ "$part" != timings ]; then
t0=$SECONDS
# every Triton kernel test and every op test that names a GPU backend, one process per core
# (from tests/: the source tree must not shadow the installed package)
# -v names each test as it ends (a run cut short still says which failed); pytest-timeout, where
# installed, turns a hung test into a traceback
timeout_opt=$(python3 -c "import pytest_timeout" 2>/dev/null && echo "--timeout=60")
(cd tests && timeout 400 python3 -m pytest -v -p no:cacheprovider -p no:benchmark -n 16 \
  $timeout_opt -rfE --tb=short kernels ops -k "triton or cuda or gpu") > "$out/tests.log" 2>&1
grep -E "FAILED|ERROR" "$out/tests.log" | sed 's/^\[gw[0-9]*\] \[ *[0-9]*%\] //' | sort -u | head -60
tail -3 "$out/tests.log"
echo "tests: $((SECONDS - t0)) s"
fi
[ "$part" = tests ] && exit 0
t0=$SECONDS
timeout 300 python3 bench/gpu_timings.py "$@" 2>"$out/timings.err" | tee "$out/timings.md"
echo "timings: $((SECONDS - t0)) s"
tail -20 "$out/timings.err"
