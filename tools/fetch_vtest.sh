#!/usr/bin/env bash
# Fetch OpenCV's sample pedestrian video vtest.avi (768x576, 795 frames) from the Debian/Ubuntu
# `opencv-doc` package into a cache directory, idempotently, and print its path.
#
# Why: the demo person detector (models/peoplenet-demo/) is trained on this clip and
# the only network we may use is the OS package repository. `apt-get download` + `dpkg -x` gets the
# file without installing the package (an installed opencv-doc is used directly when present).
#
# Usage: tools/fetch_vtest.sh [CACHE_DIR]   (default: <repo>/.cache/vtest)
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache_dir="${1:-$repo_root/.cache/vtest}"
target="$cache_dir/vtest.avi"
# sha256 of the file in Debian bookworm's opencv-doc 4.6.0+dfsg-12; other releases may ship another
# encoding of the same clip, so a mismatch is reported but not fatal.
known_sha256="45cddc9490be69345cbdab64ca583be65987e864ca408038e648db99e10516cf"
data_rel="usr/share/doc/opencv-doc/examples/data"

if [[ -s "$target" ]]; then
    echo "$target"
    exit 0
fi
mkdir -p "$cache_dir"

# extract_from DIR: copy vtest.avi (or its .gz, as some releases compress docs) from DIR to $target.
extract_from() {
    local dir="$1"
    if [[ -s "$dir/vtest.avi" ]]; then
        cp "$dir/vtest.avi" "$target.tmp"
    elif [[ -s "$dir/vtest.avi.gz" ]]; then
        gzip -dc "$dir/vtest.avi.gz" >"$target.tmp"
    else
        return 1
    fi
    mv "$target.tmp" "$target"
}

if ! extract_from "/$data_rel" 2>/dev/null; then
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
    if ! (cd "$work" && apt-get download opencv-doc >&2); then
        # A fresh machine may have no package lists yet; refresh once (needs root) and retry.
        if [[ "$(id -u)" == 0 ]]; then
            apt-get update >&2
            (cd "$work" && apt-get download opencv-doc >&2)
        else
            echo "fetch_vtest: 'apt-get download opencv-doc' failed; run 'apt-get update' as root" >&2
            exit 1
        fi
    fi
    dpkg -x "$work"/opencv-doc_*.deb "$work/root"
    if ! extract_from "$work/root/$data_rel"; then
        echo "fetch_vtest: no vtest.avi in opencv-doc under /$data_rel" >&2
        exit 1
    fi
fi

actual="$(sha256sum "$target" | cut -d' ' -f1)"
if [[ "$actual" != "$known_sha256" ]]; then
    echo "fetch_vtest: note: sha256 $actual differs from Debian bookworm's $known_sha256" >&2
fi
echo "$target"
