#!/usr/bin/env bash
# The README demo: the demo person detector on the demo video, results over MQTT,
# shown live by `edged watch`.
#
#   1. A Python with edged and its CPU dependencies: $PYTHON, else .venv/demo, else python3 when it
#      already imports them; otherwise .venv/demo is made with `pip install -e '.[cpu]'` (under
#      constraints/pyXY.txt when there is one, as tools/test.sh does).
#   2. A broker: --broker HOST:PORT, else a local mosquitto started on a free 127.0.0.1 port with
#      a throw-away config (apt-get installs mosquitto first when it is missing and we are root).
#   3. `edged check-config` on the demo config (default configs/demo.yaml): a broken one stops
#      the demo here, exit 2, with the error naming that file. Then `edged run` on a copy of it
#      with the broker injected into its mqtt section, the outbox in a temporary directory and,
#      when the configured metrics port is busy, a free one. The copy sits next to the original
#      (as .demo-run-PID.yaml) so relative model and video paths still resolve, and is removed
#      on exit; edged's log (its path is printed) is kept, naming the original file.
#   4. `edged watch`: person detections appear as they are published. The metrics URL in use is
#      printed. If edged exits, the demo stops at once with the end of its log and edged's exit
#      code (1 if that was 0). Ctrl-C stops everything (edged gets SIGTERM and exits cleanly).
#
# Usage: tools/demo.sh [--config FILE] [--broker HOST:PORT] [--count N --timeout S]
#   --count N --timeout S: exit 0 after N result messages, 1 if they did not come within S seconds
#   (the acceptance check: `tools/demo.sh --count 5 --timeout 30`).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
config="$repo/configs/demo.yaml"
broker=""
watch_args=()

usage() { sed -n '2,24p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
while [[ $# -gt 0 ]]; do
    case "$1" in
        --config) config="$2"; shift 2 ;;
        --broker) broker="$2"; shift 2 ;;
        --count|--timeout) watch_args+=("$1" "$2"); shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "demo: unknown argument $1" >&2; usage >&2; exit 2 ;;
    esac
done

# Ctrl-C reaches the whole foreground process group; the broker and edged run in sessions of
# their own so that cleanup() stops them in order: edged first (it publishes "stopped"), then
# the broker.
detach=()
command -v setsid >/dev/null && detach=(setsid)

say() { printf '[demo +%ss] %s\n' "$SECONDS" "$*" >&2; }
die() { printf 'demo: %s\n' "$*" >&2; exit 1; }

[[ -f "$config" ]] || die "no demo config at $config (--config FILE picks another)"
config="$(cd "$(dirname "$config")" && pwd)/$(basename "$config")"

# -- 1. Python -------------------------------------------------------------------------------
imports_edged() {
    (cd "$repo" && "$1" -c 'import edged.cli, paho.mqtt.client, onnxruntime, cv2, yaml' 2>/dev/null)
}

pick_python() {
    local venv="$repo/.venv/demo"
    if [[ -n "${PYTHON:-}" ]]; then
        imports_edged "$PYTHON" || die "PYTHON=$PYTHON cannot import edged and its dependencies"
        echo "$PYTHON"; return
    fi
    if [[ -x "$venv/bin/python" ]] && imports_edged "$venv/bin/python"; then
        echo "$venv/bin/python"; return
    fi
    if command -v python3 >/dev/null && imports_edged python3; then
        command -v python3; return
    fi
    command -v python3 >/dev/null || die "python3 is missing"
    say "installing edged into $venv (pip install -e '.[cpu]'; once)"
    if ! python3 -m venv "$venv" >&2; then
        [[ $EUID -eq 0 ]] || die "python3 cannot make a venv: apt-get install python3-venv"
        apt-get install -y python3-venv >&2
        python3 -m venv "$venv" >&2
    fi
    local version constraints=()
    version="$("$venv/bin/python" -c 'import sys; print("py%d%d" % sys.version_info[:2])')"
    [[ -f "$repo/constraints/$version.txt" ]] && constraints=(-c "$repo/constraints/$version.txt")
    "$venv/bin/python" -m pip install -q "${constraints[@]}" --upgrade pip setuptools wheel >&2
    "$venv/bin/python" -m pip install -q "${constraints[@]}" --no-build-isolation -e "${repo}[cpu]" >&2
    imports_edged "$venv/bin/python" || die "edged still does not import from $venv"
    echo "$venv/bin/python"
}

py="$(pick_python)"
say "python: $py"

# -- 3a. the config, checked as the user wrote it (errors name this file, not the copy) -------
(cd "$repo" && "$py" -m edged check-config "$config" >/dev/null) || exit 2

workdir="$(mktemp -d "${TMPDIR:-/tmp}/edged-demo.XXXXXX")"
run_config="$(dirname "$config")/.demo-run-$$.yaml"
# Outside $workdir: the log outlives the demo (a failed or interrupted run can be read later).
log="${TMPDIR:-/tmp}/edged-demo-$$.log"
edged_pid=""
broker_pid=""
watch_pid=""

# name_user_config: the log names the user's config file, not the temporary copy edged ran.
name_user_config() {
    [[ -f "$log" ]] || return 0
    "$py" -c 'import sys
path, copy, original = sys.argv[1:]
with open(path, errors="replace") as f:
    text = f.read()
if copy in text:
    with open(path, "w") as f:
        f.write(text.replace(copy, original))' "$log" "$run_config" "$config" 2>/dev/null || true
}

# shellcheck disable=SC2317  # called through the EXIT trap
cleanup() {
    trap - EXIT INT TERM
    if [[ -n "$watch_pid" ]]; then
        kill -TERM "$watch_pid" 2>/dev/null || true
    fi
    if [[ -n "$edged_pid" ]] && kill -0 "$edged_pid" 2>/dev/null; then
        say "stopping edged"
        kill -TERM "$edged_pid" 2>/dev/null || true
        for _ in $(seq 1 200); do kill -0 "$edged_pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$edged_pid" 2>/dev/null || true
    fi
    if [[ -n "$broker_pid" ]]; then
        kill -TERM "$broker_pid" 2>/dev/null || true
        for _ in $(seq 1 50); do kill -0 "$broker_pid" 2>/dev/null || break; sleep 0.1; done
    fi
    rm -f "$run_config"
    rm -rf "$workdir"
    name_user_config
    [[ -f "$log" ]] && say "edged log: $log (kept)"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# -- 2. broker -------------------------------------------------------------------------------
if [[ -n "$broker" ]]; then
    host="${broker%:*}"
    port="${broker##*:}"
else
    mosquitto="$(command -v mosquitto || true)"
    [[ -z "$mosquitto" && -x /usr/sbin/mosquitto ]] && mosquitto=/usr/sbin/mosquitto
    if [[ -z "$mosquitto" ]]; then
        [[ $EUID -eq 0 ]] || die "mosquitto is not installed: sudo apt-get install -y mosquitto"
        say "installing mosquitto (apt-get)"
        DEBIAN_FRONTEND=noninteractive apt-get install -y mosquitto >&2
        mosquitto=/usr/sbin/mosquitto
    fi
    host=127.0.0.1
    port="$("$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    cat >"$workdir/mosquitto.conf" <<EOF
listener $port 127.0.0.1
allow_anonymous true
persistence false
user $(id -un)
EOF
    "${detach[@]}" "$mosquitto" -c "$workdir/mosquitto.conf" >"$workdir/mosquitto.log" 2>&1 &
    broker_pid=$!
    for _ in $(seq 1 100); do
        "$py" -c "import socket; socket.create_connection(('$host', $port), 0.2).close()" \
            2>/dev/null && break
        kill -0 "$broker_pid" 2>/dev/null || die "mosquitto failed: $(cat "$workdir/mosquitto.log")"
        sleep 0.1
    done
    say "mosquitto on $host:$port (pid $broker_pid)"
fi

# -- 3. edged run ----------------------------------------------------------------------------
read -r device metrics_url < <(
    "$py" - "$config" "$run_config" "$host" "$port" "$workdir/outbox.sqlite3" <<'EOF'
import socket
import sys

import yaml

source, target, host, port, outbox = sys.argv[1:]
with open(source) as f:
    data = yaml.safe_load(f) or {}
mqtt = dict(data.get("mqtt") or {})
mqtt.update(host=host, port=int(port))
mqtt["outbox"] = dict(mqtt.get("outbox") or {}, path=outbox)
data["mqtt"] = mqtt


def bind(address, port):
    """The port bound on address (a free one for port 0), or None when it is taken."""
    family = socket.getaddrinfo(address, port, 0, socket.SOCK_STREAM)[0][0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        try:
            s.bind((address, port))
        except OSError:
            return None
        return s.getsockname()[1]


metrics = dict(data.get("metrics") or {})
if metrics.get("enabled") is False:
    url = "(metrics disabled in the config)"
else:
    # edged would refuse to start on a busy port (metrics.port: cannot listen ...): take a free
    # one instead, and print the port in use (a configured 0 is resolved here for the same reason).
    mhost, wanted = metrics.get("host", "127.0.0.1"), metrics.get("port", 9108)
    note = ""
    try:
        if wanted == 0 or bind(mhost, wanted) is None:
            metrics["port"] = bind(mhost, 0)
            data["metrics"] = metrics
            note = " ({} was busy)".format(wanted) if wanted else ""
    except OSError:  # an unresolvable metrics.host: edged says so in its log
        pass
    shown = "[{}]".format(mhost) if ":" in mhost else mhost
    url = "http://{}:{}/metrics{}".format(shown, metrics.get("port", wanted), note)
with open(target, "w") as f:
    f.write("# generated by tools/demo.sh from {}; removed on exit\n".format(source))
    yaml.safe_dump(data, f, default_flow_style=False, sort_keys=False)
print(data.get("device_id", "edged"), url)
EOF
) || die "cannot write $run_config from $config"
(cd "$repo" && exec "${detach[@]}" "$py" -m edged run -c "$run_config") >"$log" 2>&1 &
edged_pid=$!
say "edged run -c $(basename "$config") (pid $edged_pid, device $device); log: $log"
say "metrics: $metrics_url"
say "results: mosquitto_sub -h $host -p $port -t 'edged/$device/#' -v   (Ctrl-C stops the demo)"

# -- 4. edged watch, while edged runs ---------------------------------------------------------
# watch runs in the background so that edged is watched too: a demo whose edged has died stops
# at once instead of showing nothing.
(cd "$repo" && exec "$py" -m edged watch --host "$host" --port "$port" --device "$device" \
    "${watch_args[@]}") &
watch_pid=$!
while kill -0 "$watch_pid" 2>/dev/null && kill -0 "$edged_pid" 2>/dev/null; do
    sleep 0.2
done
if ! kill -0 "$edged_pid" 2>/dev/null; then
    code=0
    wait "$edged_pid" || code=$?
    edged_pid=""
    kill -TERM "$watch_pid" 2>/dev/null || true
    wait "$watch_pid" 2>/dev/null || true
    watch_pid=""
    name_user_config
    say "edged exited with code $code; the end of its log ($log):"
    tail -n 40 "$log" >&2
    ((code != 0)) || code=1
    exit "$code"
fi
code=0
wait "$watch_pid" || code=$?
watch_pid=""
exit "$code"
