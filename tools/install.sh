#!/usr/bin/env bash
# Install (or remove) edged as a systemd service: the `edged` system user, the unit, a config
# and the docs. Idempotent: a second run changes nothing, and an existing
# /etc/edged/edged.yaml is never overwritten.
#
# The Python package itself is installed separately, before this script, so that it can come
# from wherever suits the device (JetPack's Python 3.6 on a Nano, a wheel, a checkout):
#     sudo python3 -m pip install .          # puts the `edged` command in /usr/local/bin
#     sudo tools/install.sh --enable
#
# Usage: tools/install.sh [OPTIONS]
#   --prefix DIR     where the `edged` command lives: DIR/bin/edged (default /usr/local);
#                    the unit's ExecStart= is rewritten to match
#   --destdir DIR    stage every file under DIR (packaging, tests): no user is created and
#                    systemctl is not called
#   --config FILE    config to install when none exists yet (default configs/edged.yaml)
#   --enable         also `systemctl enable --now edged.service`
#   --dry-run        print what would be done; change nothing
#   --uninstall      stop and disable the service, remove the unit and the docs; keep the
#                    config, models, engines and the user (give the same --prefix/--destdir
#                    as at install)
#   --purge          with --uninstall: also remove /etc/edged, /var/lib/edged,
#                    /var/cache/edged and the user
#   -h, --help       this text
#
# Exit status: 0 done, 1 failed, 2 bad usage.
set -euo pipefail

readonly SERVICE_USER=edged
readonly UNIT_NAME=edged.service
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly REPO
readonly UNIT_SOURCE="$REPO/systemd/$UNIT_NAME"
# The prefix written in systemd/edged.service; rewritten when --prefix differs.
readonly UNIT_PREFIX=/usr/local

prefix=/usr/local
destdir="${DESTDIR:-}"
config_source="$REPO/configs/edged.yaml"
enable=0
dry_run=0
uninstall=0
purge=0

usage() { sed -n '2,/^# Exit status/p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
say() { printf '%s\n' "$*"; }
die() { printf 'install.sh: %s\n' "$*" >&2; exit 1; }
bad_usage() { printf 'install.sh: %s (see --help)\n' "$*" >&2; exit 2; }

# run CMD...: run a command that changes the system, or only show it with --dry-run.
run() {
    local shown
    shown="$(printf '%q ' "$@")"
    if ((dry_run)); then
        say "would run: ${shown% }"
    else
        say "+ ${shown% }"
        "$@"
    fi
}

parse_args() {
    while (($#)); do
        case "$1" in
            --prefix) [[ $# -ge 2 ]] || bad_usage "--prefix needs a directory"; prefix="$2"; shift ;;
            --prefix=*) prefix="${1#*=}" ;;
            --destdir) [[ $# -ge 2 ]] || bad_usage "--destdir needs a directory"; destdir="$2"; shift ;;
            --destdir=*) destdir="${1#*=}" ;;
            --config) [[ $# -ge 2 ]] || bad_usage "--config needs a file"; config_source="$2"; shift ;;
            --config=*) config_source="${1#*=}" ;;
            --enable) enable=1 ;;
            --dry-run) dry_run=1 ;;
            --uninstall) uninstall=1 ;;
            --purge) purge=1 ;;
            -h | --help) usage; exit 0 ;;
            *) bad_usage "unknown argument: $1" ;;
        esac
        shift
    done
    # The prefix goes into a sed expression and a unit file: absolute, no spaces or '#'.
    [[ "$prefix" == /* && "$prefix" != *[[:space:]#]* ]] ||
        bad_usage "--prefix must be an absolute path without spaces or '#': $prefix"
    prefix="${prefix%/}"
    [[ -z "$destdir" || "$destdir" == /* ]] || destdir="$PWD/$destdir"
    destdir="${destdir%/}"
    ((purge == 0 || uninstall == 1)) || bad_usage "--purge only goes with --uninstall"
    ((enable == 0 || uninstall == 0)) || bad_usage "--enable and --uninstall exclude each other"
}

# Paths on the target system (without DESTDIR) ...
unit_path=/etc/systemd/system/$UNIT_NAME
config_dir=/etc/edged
config_path=$config_dir/edged.yaml
state_dir=/var/lib/edged
cache_dir=/var/cache/edged
doc_dir() { echo "$prefix/share/doc/edged"; }
# ... and where this run writes them.
staged() { echo "$destdir$1"; }

# A live system is changed only by root; staging into --destdir or a dry run needs no root.
require_root_for_live_system() {
    if [[ -z "$destdir" ]] && ((dry_run == 0)) && [[ "$(id -u)" != 0 ]]; then
        die "run as root to install on this system (or use --destdir DIR / --dry-run)"
    fi
}

nologin_shell() {
    local shell
    for shell in /usr/sbin/nologin /sbin/nologin /bin/false; do
        [[ -x "$shell" ]] && { echo "$shell"; return; }
    done
    echo /bin/false
}

# Groups that give access to the camera and GPU device nodes: "video" on L4T (its
# /dev/nvhost-* and /dev/video* nodes); "render" only where it exists (systemd/edged.service explains why not in the unit).
device_groups() {
    local groups=video
    getent group render >/dev/null 2>&1 && groups="$groups,render"
    echo "$groups"
}

ensure_user() {
    if [[ -n "$destdir" ]]; then
        say "skip: creating user '$SERVICE_USER' (--destdir: the package's post-install does it)"
        return
    fi
    local groups
    groups="$(device_groups)"
    if getent passwd "$SERVICE_USER" >/dev/null 2>&1; then
        # Idempotent: add missing device groups, change nothing else.
        run usermod --append --groups "$groups" "$SERVICE_USER"
    else
        # Home = StateDirectory: GStreamer, CUDA and Python caches that ignore the unit's
        # environment still land somewhere writable.
        run useradd --system --user-group --home-dir "$state_dir" --no-create-home \
            --shell "$(nologin_shell)" --groups "$groups" \
            --comment "edged inference daemon" "$SERVICE_USER"
    fi
}

# The unit with ExecStart= (and the docs path) moved to --prefix.
render_unit() {
    sed -e "s#^ExecStart=$UNIT_PREFIX/bin/edged #ExecStart=$prefix/bin/edged #" \
        -e "s#file://$UNIT_PREFIX/share/doc/edged/#file://$prefix/share/doc/edged/#" \
        "$UNIT_SOURCE"
}

# install_file SOURCE_OR_- TARGET MODE: copy unless the target already has that content.
install_file() {
    local source="$1" target="$2" mode="$3" tmp
    tmp="$(mktemp)"
    if [[ "$source" == - ]]; then cat >"$tmp"; else cat "$source" >"$tmp"; fi
    if [[ -f "$target" ]] && cmp -s "$tmp" "$target"; then
        say "unchanged: $target"
    elif ((dry_run)); then
        say "would install: $target (mode $mode)"
    else
        say "installing: $target (mode $mode)"
        install -D -m "$mode" "$tmp" "$target"
    fi
    rm -f "$tmp"
}

install_config() {
    local target
    target="$(staged "$config_path")"
    if [[ -e "$target" ]]; then
        say "kept: $target (an existing config is never overwritten)"
        return
    fi
    [[ -f "$config_source" ]] || die "config template not found: $config_source (use --config FILE)"
    # 0640 root:edged: the config may hold the MQTT password.
    run install -D -m 0640 "$config_source" "$target"
    if [[ -z "$destdir" ]]; then
        run chgrp "$SERVICE_USER" "$target"
    fi
}

check_command_installed() {
    local command_path
    command_path="$(staged "$prefix/bin/edged")"
    if [[ ! -x "$command_path" ]]; then
        say "warning: $command_path is missing; install the package first," \
            "e.g. sudo python3 -m pip install $REPO"
    fi
}

systemctl_live() {
    if [[ -n "$destdir" ]]; then
        say "skip: systemctl $* (--destdir)"
    else
        run systemctl "$@"
    fi
}

do_install() {
    [[ -f "$UNIT_SOURCE" ]] || die "unit not found: $UNIT_SOURCE"
    ensure_user
    render_unit | install_file - "$(staged "$unit_path")" 0644
    install_config
    # The unit's Documentation= points at the README.
    local doc
    for doc in README.md systemd/README.md; do
        if [[ -f "$REPO/$doc" ]]; then
            install_file "$REPO/$doc" "$(staged "$(doc_dir)/${doc//\//-}")" 0644
        fi
    done
    check_command_installed
    systemctl_live daemon-reload
    if ((enable)); then
        systemctl_live enable --now "$UNIT_NAME"
    else
        say "next: systemctl enable --now $UNIT_NAME"
    fi
}

remove_path() {
    local target
    target="$(staged "$1")"
    if [[ -e "$target" || -L "$target" ]]; then
        run rm -rf -- "$target"
    else
        say "absent: $target"
    fi
}

do_uninstall() {
    if [[ -e "$(staged "$unit_path")" ]]; then
        systemctl_live disable --now "$UNIT_NAME"
    fi
    remove_path "$unit_path"
    remove_path "$(doc_dir)"
    systemctl_live daemon-reload
    if ((purge)); then
        remove_path "$config_dir"
        remove_path "$state_dir"
        remove_path "$cache_dir"
        if [[ -n "$destdir" ]]; then
            say "skip: removing user '$SERVICE_USER' (--destdir)"
        elif getent passwd "$SERVICE_USER" >/dev/null 2>&1; then
            run userdel "$SERVICE_USER"
        fi
    else
        say "kept: $config_dir, $state_dir, $cache_dir and user '$SERVICE_USER' (--purge removes them)"
    fi
}

main() {
    parse_args "$@"
    require_root_for_live_system
    if ((dry_run)); then say "dry run: nothing is changed"; fi
    if ((uninstall)); then do_uninstall; else do_install; fi
}

main "$@"
