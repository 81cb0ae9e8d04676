#!/usr/bin/env bash
# The GPU check of edged/gpu on a machine with an NVIDIA GPU and nvcc (run from the repo root):
# installs the wheels in WHEELS (default ../.whl; pycuda's sdist is built into a wheel there
# when none is given, ~150 s), then runs the GPU tests (marker gpu) and the GPU benchmark.
#
# Usage: tools/gpu_check.sh [OUTDIR]    (logs, built pycuda wheel and benchmark tables go there)
set -uo pipefail
out="${1:-${OUT:-/tmp/edged-gpu}}"
wheels="${WHEELS:-../.whl}"
site=/tmp/edged-site
mkdir -p "$out" "$site"
export PATH="/usr/local/cuda/bin:$PATH" PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$site" $(ls "$wheels"/*.whl | grep -v pycuda) || exit 1
export PYTHONPATH="$site:$PWD"
if ls "$wheels"/pycuda-*.whl >/dev/null 2>&1 \
        && python3 -m pip install -q --no-index --no-deps --target "$site" "$wheels"/pycuda-*.whl \
        && python3 -c 'import pycuda.driver as d; d.init(); print("pycuda", d.get_version(), d.Device(0).name())'; then
    echo "pycuda: carried wheel"
else
    echo "pycuda: building from the sdist"
    rm -rf "$site"/pycuda* /tmp/pycuda-build && mkdir -p /tmp/pycuda-build
    tar xzf "$wheels"/pycuda-*.tar.gz -C /tmp/pycuda-build
    (cd /tmp/pycuda-build/pycuda-* && python3 configure.py --cuda-root=/usr/local/cuda \
        && python3 -m pip wheel -q --no-build-isolation --no-deps -w "$out" .) || exit 1
    python3 -m pip install -q --no-index --no-deps --target "$site" "$out"/pycuda-*.whl || exit 1
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"
timeout 300 python3 -m pytest -p no:cacheprovider -q -rs --timeout 280 tests/test_gpu_reference.py \
    tests/test_preprocessor_seam.py tests/test_gpu_cuda.py 2>&1 | tee "$out/gpu_tests.log" | tail -40
timeout 200 python3 -m benchmarks.gpu_preprocess --out "$out" --repeats "${REPEATS:-50}" 2>&1 \
    | tee "$out/bench.log" | tail -60
