# shellcheck shell=bash
# Sourced by scripts/local-swift-image, scripts/image and scripts/test-container.
#
#   . "$(dirname "$0")/lib/docker-engine.sh"
#   ensure_debian_packages docker.io curl      # installs only what is missing (root, apt)
#   ensure_docker_engine                       # uses a running engine or starts dockerd
#   docker ...                                 # the client chosen below
#   at_exit 'docker rm -f my-container'        # cleanup hooks, run last-registered first
#
# Only a dockerd that this shell started is stopped at exit; an engine that was
# already running is left alone.

# The Debian client (/usr/bin/docker, 20.10) runs BuildKit builds by itself;
# a newer client earlier on PATH may need the buildx plugin for
# DOCKER_BUILDKIT=1, and buildx is not installed here. DOCKER_CLIENT overrides.
docker_client() {
    if [[ -n "${DOCKER_CLIENT:-}" ]]; then
        printf '%s\n' "$DOCKER_CLIENT"
    elif [[ -x /usr/bin/docker ]]; then
        printf '%s\n' /usr/bin/docker
    else
        command -v docker || printf '%s\n' docker
    fi
}

docker() { command "$(docker_client)" "$@"; }

log_info() { printf '%s %s\n' "[$(date +%H:%M:%S)]" "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# --- exit hooks -------------------------------------------------------------
_AT_EXIT_HOOKS=()
_run_at_exit() {
    local status=$? i
    trap - EXIT
    for ((i = ${#_AT_EXIT_HOOKS[@]} - 1; i >= 0; i--)); do
        eval "${_AT_EXIT_HOOKS[i]}" || true
    done
    exit "$status"
}
at_exit() {
    _AT_EXIT_HOOKS+=("$*")
    trap _run_at_exit EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

# --- packages ---------------------------------------------------------------
_APT_UPDATED=
ensure_debian_packages() {
    local missing=() package
    for package in "$@"; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' \
            || missing+=("$package")
    done
    ((${#missing[@]} == 0)) && return 0
    command -v apt-get >/dev/null || die "missing packages ${missing[*]} and no apt-get to install them"
    local sudo=()
    if ((EUID != 0)); then
        command -v sudo >/dev/null || die "missing packages ${missing[*]}: run as root or install them"
        sudo=(sudo -n)
    fi
    log_info "installing Debian packages: ${missing[*]}"
    if [[ -z "$_APT_UPDATED" ]]; then
        "${sudo[@]}" apt-get -q update >&2 || die "apt-get update failed"
        _APT_UPDATED=1
    fi
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get -q install -y --no-install-recommends "${missing[@]}" >&2 \
        || die "apt-get install ${missing[*]} failed"
}

# --- engine -----------------------------------------------------------------
DOCKERD_PID=
DOCKERD_LOG=${DOCKERD_LOG:-/tmp/upload-server-dockerd.log}

docker_engine_running() { docker info >/dev/null 2>&1; }

ensure_docker_engine() {
    if ! command -v dockerd >/dev/null && ! [[ -x "$(docker_client)" ]]; then
        ensure_debian_packages docker.io
    fi
    docker_engine_running && return 0
    if [[ -n "${DOCKER_HOST:-}" ]]; then
        die "DOCKER_HOST=$DOCKER_HOST does not answer 'docker info'; not starting a local dockerd"
    fi
    ensure_debian_packages docker.io
    ((EUID == 0)) || die "no Docker engine is running and starting dockerd needs root"
    local dockerd
    dockerd=$(command -v dockerd) || die "dockerd not found after installing docker.io"
    log_info "starting $dockerd (log: $DOCKERD_LOG)"
    # setsid: the daemon gets its own process group, so a ^C in this terminal
    # reaches it only through the exit hook below.
    setsid "$dockerd" >"$DOCKERD_LOG" 2>&1 </dev/null &
    DOCKERD_PID=$!
    at_exit docker_engine_stop
    local waited=0
    until docker_engine_running; do
        if ! kill -0 "$DOCKERD_PID" 2>/dev/null; then
            DOCKERD_PID=
            tail -n 20 "$DOCKERD_LOG" >&2
            die "dockerd exited at start; see $DOCKERD_LOG"
        fi
        ((waited++ < 120)) || die "dockerd did not answer within 60 s; see $DOCKERD_LOG"
        sleep 0.5
    done
    # setsid does not fork when the shell has no job control, so $! is dockerd;
    # the pid file dockerd writes is the authority all the same.
    local from_file
    from_file=$(cat /var/run/docker.pid 2>/dev/null || true)
    [[ "$from_file" =~ ^[0-9]+$ ]] && DOCKERD_PID=$from_file
    log_info "dockerd is up (pid $DOCKERD_PID)"
}

# Stops the daemon only if ensure_docker_engine started it.
docker_engine_stop() {
    [[ -n "$DOCKERD_PID" ]] || return 0
    local pid=$DOCKERD_PID i
    DOCKERD_PID=
    kill -0 "$pid" 2>/dev/null || return 0
    log_info "stopping the dockerd this script started (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 60; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.5
    done
    log_info "dockerd did not stop within 30 s; killing it"
    kill -KILL "$pid" 2>/dev/null || true
}
