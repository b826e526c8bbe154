#!/usr/bin/env bash
# A Docker engine for CI and for machines without Docker Desktop: what a CI runner provides.
#
#   scripts/docker-engine.sh start    install docker.io if missing, start dockerd, make sure the base image exists
#   scripts/docker-engine.sh stop     stop the dockerd this script started (a no-op otherwise; safe to repeat)
#   scripts/docker-engine.sh status   does an engine answer, who started it, is the base image there
#
# An engine that already answers (Docker Desktop, a GitHub runner, systemd's docker.service) is left alone:
# start only checks the base image, stop never stops an engine it did not start.
#
# The base image (the Dockerfile's PYTHON_IMAGE, python:3.11-slim) is pulled when a registry answers. Where
# none does (an air-gapped classroom, a sandboxed CI), a STAND-IN is built: Debian bookworm (the official
# image's Debian, and its Python 3.11) made with debootstrap, plus python3-venv and the user tools the
# Dockerfile calls, then `docker import`ed under the base image's name. The debootstrap result is cached,
# so only the first start pays for it.
#
# Settings (environment variables):
#   WORKSHOP_DOCKER_OFFLINE=1      do not try to pull the base image: build the stand-in directly
#   WORKSHOP_DOCKER_PULL_TIMEOUT   seconds a pull may take before the stand-in is built (default 30)
#   WORKSHOP_DOCKER_STATE          cache for the stand-in's root filesystem (default /var/lib/workshop-docker)
#   WORKSHOP_DOCKER_RUN            dockerd's pid and log files (default /run/workshop-dockerd)
#   WORKSHOP_DEBIAN_MIRROR         Debian mirror for debootstrap (default: the host's apt sources)
#   WORKSHOP_DOCKERD_FLAGS         extra dockerd flags, tried before the built-in fallbacks
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
STATE="${WORKSHOP_DOCKER_STATE:-/var/lib/workshop-docker}"
RUN_DIR="${WORKSHOP_DOCKER_RUN:-/run/workshop-dockerd}"
PIDFILE="$RUN_DIR/dockerd.pid"
LOG="$RUN_DIR/dockerd.log"
PULL_TIMEOUT="${WORKSHOP_DOCKER_PULL_TIMEOUT:-30}"
START_TIMEOUT=60
SUITE=bookworm
# What the Dockerfile's RUN lines need beyond debootstrap's minbase (which has bash, groupadd and useradd):
# an interpreter that can make venvs with pip in them, and a CA store for pip.
STANDIN_PACKAGES=python3,python3-venv,python3-pip,ca-certificates
STANDIN_LABEL=org.ml-serving-workshop.stand-in

say() { echo "docker-engine: $*"; }
die() { echo "docker-engine: error: $*" >&2; exit 1; }

# The base image every stage starts FROM, read from the Dockerfile so that the two never disagree.
base_image() {
    sed -n 's/^ARG PYTHON_IMAGE=\(.*\)$/\1/p' "$ROOT/Dockerfile" | head -n 1
}

docker_cli() {
    command -v docker 2>/dev/null || { [[ -x /usr/bin/docker ]] && echo /usr/bin/docker; } || true
}

engine_answers() {
    local cli
    cli="$(docker_cli)"
    [[ -n "$cli" ]] && timeout 20 "$cli" info >/dev/null 2>&1
}

our_pid() {
    [[ -f "$PIDFILE" ]] || return 1
    local pid
    pid="$(cat "$PIDFILE")"
    [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null && [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == dockerd ]] \
        && echo "$pid"
}

need_root() {
    # $1: what needs root; $2: the command a user should run instead.
    [[ $(id -u) -eq 0 ]] && return 0
    echo "docker-engine: $1 needs root. Run:" >&2
    echo "  $2" >&2
    exit 1
}

apt_install() {
    need_root "installing $*" "sudo apt-get install -y $*  (then: sudo $0 start)"
    command -v apt-get >/dev/null 2>&1 \
        || die "$* missing and no apt-get here: install Docker Engine (https://docs.docker.com/engine/install/)"
    say "installing $* with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# ------------------------------------------------------------------------------------------------ dockerd

# Flag sets tried in order until dockerd answers. Each is explained here because a sandbox differs from
# a laptop in exactly these places:
#   (none)                      the defaults: overlay2 storage, the docker0 bridge with iptables NAT. Works on
#                               a normal Linux host and on this project's CI machines.
#   --storage-driver=vfs        overlayfs cannot be mounted (dockerd inside a container whose own root is an
#                               overlay, some VMs): vfs copies layers instead. Slower, more disk, always works.
#   --iptables=false            the kernel has no netfilter/iptables: dockerd does not program NAT rules.
#                               Published ports (-p 127.0.0.1:PORT:8000) still work through docker-proxy,
#                               the userland proxy.
FALLBACK_FLAGS=("" "--storage-driver=vfs" "--storage-driver=vfs --iptables=false")

start_dockerd() {
    local flags="$1" pid first_line
    mkdir -p "$RUN_DIR"
    touch "$LOG"
    first_line=$(($(wc -l <"$LOG") + 1))  # this attempt's lines, for the tail shown on failure
    say "starting dockerd ${flags:-(default flags)}; log: $LOG"
    # setsid: dockerd outlives this script and the CI step that ran it; its own pidfile is the default one.
    # shellcheck disable=SC2086  # flags is a list of words on purpose
    setsid dockerd $flags >>"$LOG" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$PIDFILE"
    local waited=0
    while ((waited < START_TIMEOUT)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            say "dockerd exited during start-up; last lines of $LOG:"
            tail -n "+$first_line" "$LOG" | tail -n 15 | sed 's/^/    /'
            rm -f "$PIDFILE"
            return 1
        fi
        if engine_answers; then
            say "engine answers after ${waited}s (dockerd pid $pid)"
            return 0
        fi
        sleep 1
        waited=$((waited + 1))
    done
    say "dockerd did not answer within ${START_TIMEOUT}s; last lines of $LOG:"
    tail -n "+$first_line" "$LOG" | tail -n 30 | sed 's/^/    /'
    kill "$pid" 2>/dev/null || true
    rm -f "$PIDFILE"
    return 1
}

ensure_engine() {
    if engine_answers; then
        if our_pid >/dev/null; then
            say "engine already running (started by this script, pid $(our_pid))"
        else
            say "an engine already answers (not started by this script): leaving it alone"
        fi
        return 0
    fi
    if [[ -S /var/run/docker.sock && ! -w /var/run/docker.sock && $(id -u) -ne 0 ]]; then
        die "an engine socket exists (/var/run/docker.sock) but $(id -un) may not use it:" \
            "sudo usermod -aG docker $(id -un) and log in again, or run: sudo $0 start"
    fi
    command -v dockerd >/dev/null 2>&1 || apt_install docker.io
    need_root "starting dockerd" "sudo $0 start"
    local flag_sets=("${FALLBACK_FLAGS[@]}")
    [[ -n "${WORKSHOP_DOCKERD_FLAGS:-}" ]] && flag_sets=("$WORKSHOP_DOCKERD_FLAGS" "${flag_sets[@]}")
    local flags
    for flags in "${flag_sets[@]}"; do
        start_dockerd "$flags" && return 0
    done
    die "dockerd did not start with any of the flag sets above; see $LOG"
}

# ------------------------------------------------------------------------------------------------ base image

debian_mirror() {
    # The first Debian (not security) archive in the host's apt sources, deb822 or one-line format.
    if [[ -n "${WORKSHOP_DEBIAN_MIRROR:-}" ]]; then
        echo "$WORKSHOP_DEBIAN_MIRROR"
        return
    fi
    local uri
    uri="$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null | sed -n 's/^URIs:[[:space:]]*//p' | tr ' ' '\n' \
        | grep -E '/debian/?$' | head -n 1 || true)"
    if [[ -z "$uri" ]]; then
        uri="$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
            | awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { print $i; break } }' \
            | grep -E '/debian/?$' | head -n 1 || true)"
    fi
    echo "${uri:-http://deb.debian.org/debian}"
}

# The cached root filesystem: a tarball named after what is in it, so a change of packages rebuilds it.
# Sets STANDIN_TARBALL.
standin_rootfs() {
    local key tarball rootfs mirror keyring=()
    key="$(echo "$SUITE $STANDIN_PACKAGES v1" | sha256sum | cut -c1-12)"
    tarball="$STATE/standin-$SUITE-$key.tar"
    if [[ -s "$tarball" ]]; then
        say "stand-in root filesystem cached: $tarball"
        STANDIN_TARBALL="$tarball"
        return
    fi
    command -v debootstrap >/dev/null 2>&1 || apt_install debootstrap
    [[ -f /usr/share/keyrings/debian-archive-keyring.gpg ]] || apt_install debian-archive-keyring
    keyring=(--keyring=/usr/share/keyrings/debian-archive-keyring.gpg)
    mirror="$(debian_mirror)"
    rootfs="$STATE/rootfs.tmp"
    rm -rf "$rootfs"
    mkdir -p "$rootfs"
    say "debootstrap $SUITE (minbase + $STANDIN_PACKAGES) from $mirror; log: $STATE/debootstrap.log"
    local started=$SECONDS
    if ! debootstrap --variant=minbase --include="$STANDIN_PACKAGES" "${keyring[@]}" \
        "$SUITE" "$rootfs" "$mirror" >"$STATE/debootstrap.log" 2>&1; then
        tail -n 20 "$STATE/debootstrap.log" | sed 's/^/    /'
        die "debootstrap failed; full log: $STATE/debootstrap.log"
    fi
    say "debootstrap took $((SECONDS - started))s"
    # Make it look like the official image where the Dockerfile (and a learner) can tell:
    # `python` is /usr/local/bin/python, and pip may install outside a venv (no PEP 668 marker).
    ln -sf /usr/bin/python3 "$rootfs/usr/local/bin/python"
    ln -sf /usr/bin/python3 "$rootfs/usr/local/bin/python3"
    ln -sf /usr/bin/pip3 "$rootfs/usr/local/bin/pip"
    rm -f "$rootfs"/usr/lib/python3.*/EXTERNALLY-MANAGED
    # Slim: no apt lists, no downloaded .debs, no docs.
    rm -rf "$rootfs/var/lib/apt/lists"/* "$rootfs/var/cache/apt"/*.bin "$rootfs/var/cache/apt/archives"/*.deb \
        "$rootfs/usr/share/doc"/* "$rootfs/usr/share/man"/* "$rootfs/usr/share/info"/*
    tar --numeric-owner -C "$rootfs" -cf "$tarball.tmp" .
    mv "$tarball.tmp" "$tarball"
    rm -rf "$rootfs"
    STANDIN_TARBALL="$tarball"
}

ensure_base_image() {
    local cli image
    cli="$(docker_cli)"
    image="$(base_image)"
    [[ -n "$image" ]] || die "no 'ARG PYTHON_IMAGE=...' line in $ROOT/Dockerfile"
    if "$cli" image inspect "$image" >/dev/null 2>&1; then
        if [[ -n "$("$cli" image inspect --format "{{index .Config.Labels \"$STANDIN_LABEL\"}}" "$image")" ]]; then
            say "base image $image present (the local stand-in)"
        else
            say "base image $image present"
        fi
        return 0
    fi
    if [[ "${WORKSHOP_DOCKER_OFFLINE:-0}" != 1 ]]; then
        say "pulling $image (at most ${PULL_TIMEOUT}s)"
        if timeout "$PULL_TIMEOUT" "$cli" pull -q "$image"; then
            return 0
        fi
        say "no registry answered for $image: building a local stand-in"
    else
        say "WORKSHOP_DOCKER_OFFLINE=1: building a local stand-in for $image"
    fi
    need_root "building the stand-in base image (debootstrap)" "sudo $0 start"
    mkdir -p "$STATE"
    local started=$SECONDS
    standin_rootfs
    # The official image's environment and command; the label tells `status` (and a curious learner) what
    # this image really is.
    "$cli" import \
        --change 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change "LABEL $STANDIN_LABEL=\"Debian $SUITE python3 via debootstrap, standing in for $image\"" \
        --change 'CMD ["python3"]' \
        "$STANDIN_TARBALL" "$image" >/dev/null
    say "imported the stand-in as $image ($((SECONDS - started))s): $("$cli" run --rm "$image" python --version)"
}

# ------------------------------------------------------------------------------------------------ commands

cmd_start() {
    ensure_engine
    ensure_base_image
    say "ready: $("$(docker_cli)" version --format 'server {{.Server.Version}}, client {{.Client.Version}}')"
}

cmd_stop() {
    local pid
    if ! pid="$(our_pid)"; then
        rm -f "$PIDFILE"
        if engine_answers; then
            say "not stopping the running engine: this script did not start it"
        else
            say "no engine started by this script is running"
        fi
        return 0
    fi
    say "stopping dockerd (pid $pid)"
    kill -TERM "$pid"
    local waited=0
    while kill -0 "$pid" 2>/dev/null && ((waited < 30)); do
        sleep 1
        waited=$((waited + 1))
    done
    if kill -0 "$pid" 2>/dev/null; then
        say "dockerd still running after 30s: sending KILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$PIDFILE"
    say "stopped"
}

cmd_status() {
    local cli image pid
    cli="$(docker_cli)"
    image="$(base_image)"
    if ! engine_answers; then
        say "no engine answers (start one with: sudo $0 start)"
        return 3
    fi
    if pid="$(our_pid)"; then
        say "engine running, started by this script (dockerd pid $pid, log $LOG)"
    else
        say "engine running, not started by this script"
    fi
    "$cli" version --format 'docker-engine: server {{.Server.Version}}, client {{.Client.Version}} ('"$cli"')'
    if "$cli" buildx version >/dev/null 2>&1; then
        say "BuildKit builds: $cli with the buildx plugin"
    elif [[ -x /usr/bin/docker && "$(/usr/bin/docker version --format '{{.Client.Version}}' 2>/dev/null)" == 20.* ]]; then
        say "BuildKit builds: /usr/bin/docker (20.10, BuildKit built in; workshop.container picks it)"
    else
        say "BuildKit builds: no client can (install the buildx plugin: docker-buildx-plugin or docker-buildx)"
    fi
    if "$cli" image inspect "$image" >/dev/null 2>&1; then
        local label
        label="$("$cli" image inspect --format "{{index .Config.Labels \"$STANDIN_LABEL\"}}" "$image")"
        say "base image $image: ${label:-present}"
    else
        say "base image $image: missing (start pulls it or builds a stand-in)"
    fi
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    *)
        sed -n '2,9s/^# \{0,1\}//p' "$0" >&2
        exit 2
        ;;
esac
