#!/usr/bin/env bash
# The GPU check on a machine with an NVIDIA GPU and nvcc (run from the repo root): installs the
# wheels in WHEELS (default .whl, else ../.whl; pycuda's sdist is built into a wheel when no
# pycuda wheel is there, ~150 s), then runs, each under its own time limit and whatever the
# step before it did:
#   1. every test marked gpu in tests/ (pytest -m gpu on the files that use the marker),
#   2. python -m benchmarks.gpu_preprocess (the kernel against a device copy, two passes, OpenCV),
#   3. python -m benchmarks.gpu_daemon (edged run's CPU per frame, preprocess cuda against cpu).
# The limits add up to 7 min 40 s (a lent GPU machine allows 10 per command); a step that
# runs past its limit is killed and the next one runs. Exit status: 0 when every step passed.
#
# Usage: tools/gpu_check.sh [OUTDIR]   (default $OUT, else /tmp/edged-gpu)
# Writes into OUTDIR, at most 8 files (what a lent machine sends back): gpu_check.log (set-up,
# GPU, each step's exit status), gpu_tests.log, gpu_preprocess.{log,md,json},
# gpu_daemon.{log,md,json}; a pycuda wheel built from the sdist is put there too.
# Limits (seconds) may be changed: TESTS_S, PREPROCESS_S, DAEMON_S; REPEATS for gpu_preprocess;
# SITE: where the wheels are installed (default /tmp/edged-site).
set -uo pipefail
out="${1:-${OUT:-/tmp/edged-gpu}}"
if [ -n "${WHEELS:-}" ]; then wheels="$WHEELS"; elif [ -d .whl ]; then wheels=.whl; else wheels=../.whl; fi
site="${SITE:-/tmp/edged-site}"  # where the wheels are installed
mkdir -p "$out" "$site"
export PATH="/usr/local/cuda/bin:$PATH" PYTHONUNBUFFERED=1
log="$out/gpu_check.log"
: >"$log"
say() { echo "$*" | tee -a "$log"; }

setup() {
    local others
    others=$(ls "$wheels"/*.whl 2>/dev/null | grep -v /pycuda-)
    if [ -n "$others" ]; then
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target "$site" $others || return 1
    fi
    export PYTHONPATH="$site:$PWD"
    if ls "$wheels"/pycuda-*.whl >/dev/null 2>&1 \
            && python3 -m pip install -q --no-index --no-deps --target "$site" "$wheels"/pycuda-*.whl \
            && python3 -c 'import pycuda.driver as d; d.init(); print("pycuda", d.get_version(), d.Device(0).name())'; then
        echo "pycuda: carried wheel"
    else
        echo "pycuda: building from the sdist"
        rm -rf "$site"/pycuda* /tmp/pycuda-build && mkdir -p /tmp/pycuda-build
        tar xzf "$wheels"/pycuda-*.tar.gz -C /tmp/pycuda-build || return 1
        (cd /tmp/pycuda-build/pycuda-* && python3 configure.py --cuda-root=/usr/local/cuda \
            && python3 -m pip wheel -q --no-build-isolation --no-deps -w "$out" .) || return 1
        python3 -m pip install -q --no-index --no-deps --target "$site" "$out"/pycuda-*.whl || return 1
    fi
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
}

setup 2>&1 | tee -a "$log"
setup_rc=${PIPESTATUS[0]}
export PYTHONPATH="$site:$PWD"
[ "$setup_rc" -eq 0 ] || say "set-up failed ($setup_rc); the steps run anyway and say what is missing"

failed=0
# step NAME LIMIT_S COMMAND...: runs COMMAND under `timeout`, its output into OUTDIR/NAME.log
step() {
    local name="$1" limit="$2" rc
    shift 2
    say "== $name (limit ${limit} s): $*"
    timeout --kill-after=10 "$limit" "$@" >"$out/$name.log" 2>&1
    rc=$?
    tail -40 "$out/$name.log"
    case $rc in
        0) say "== $name: passed" ;;
        124|137) say "== $name: KILLED after ${limit} s (exit $rc)"; failed=1 ;;
        *) say "== $name: FAILED (exit $rc)"; failed=1 ;;
    esac
}

timeout_flag=()
python3 -c 'import pytest_timeout' 2>/dev/null && timeout_flag=(--timeout 200)
# The test files that use the gpu marker (tests/gpu_support.py's requires_gpu, or the mark
# itself), found now, so a new GPU test file is run without being named here; only those are
# collected, so a module of the CPU suite that cannot import here (a wheel not carried) does not
# fail the step. --continue-on-collection-errors: one GPU module that cannot import does not
# keep the others from running; its error is in the log.
gpu_files=$(grep -lE 'requires_gpu|mark\.gpu' tests/test_*.py)
step gpu_tests "${TESTS_S:-220}" python3 -m pytest -p no:cacheprovider -q -rs -m gpu \
    --continue-on-collection-errors ${timeout_flag[@]+"${timeout_flag[@]}"} $gpu_files
step gpu_preprocess "${PREPROCESS_S:-140}" python3 -m benchmarks.gpu_preprocess --out "$out" \
    --repeats "${REPEATS:-50}"
step gpu_daemon "${DAEMON_S:-100}" python3 -m benchmarks.gpu_daemon --out "$out" --seconds 6 \
    --warmup 3
say "== done: $([ $failed -eq 0 ] && echo 'every step passed' || echo 'a step failed (above)')"
exit $failed
