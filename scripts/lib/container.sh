# shellcheck shell=bash
# Helpers for running the image and reading what it stored; sourced after
# lib/docker-engine.sh by scripts/image and scripts/test-container.
#
# The image has no shell and no tools: files are read back with `docker cp`
# from the container (running or stopped), which streams a tar archive.

now_ms() { date +%s%3N; }

# The hardened way to run the service: read-only root, no capabilities, no
# privilege gain, uploads on the named volume VOLUME, port 9000 published on
# a free loopback port. Extra `docker run` options may follow the image name's
# place, as: run_service NAME VOLUME IMAGE [docker run options...]
run_service() {
    local name=$1 volume=$2 image=$3
    shift 3
    docker run -d --name "$name" \
        --read-only --cap-drop ALL --security-opt no-new-privileges:true \
        -v "$volume:/upload" -p 127.0.0.1:0:9000 \
        "$@" "$image" >/dev/null
}

# host:port that reaches the container's port 9000.
service_address() {
    docker port "$1" 9000/tcp | head -n 1
}

# Waits until URL answers 200; fails after TIMEOUT seconds.
wait_for_200() {
    local url=$1 timeout=${2:-30} deadline
    deadline=$(($(now_ms) + timeout * 1000))
    until [[ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$url" 2>/dev/null)" == 200 ]]; do
        (($(now_ms) < deadline)) || return 1
        sleep 0.05
    done
}

# Uploads FILE as the multipart field "file"; prints the HTTP status, and the
# body goes to the file BODY.
upload_file() {
    local url=$1 file=$2 body=$3
    shift 3
    curl -s -o "$body" -w '%{http_code}' --max-time 60 -F "file=@$file" "$@" "$url"
}

# Writes the file PATH from CONTAINER's file system to stdout.
container_file() {
    docker cp "$1:$2" - | tar -xO
}

# "uid/gid" of PATH in CONTAINER, as numbers.
container_file_owner() {
    docker cp "$1:$2" - | tar -tv --numeric-owner | awk 'NR == 1 { print $2 }'
}

# Names in the directory PATH of CONTAINER, one a line (not recursive).
container_dir_names() {
    docker cp "$1:$2/." - | tar -t | sed -e 's#^\./##' -e 's#/$##' | awk -F/ 'NF == 1 && $1 != "" && $1 != "."'
}

sha256_of() { sha256sum | awk '{ print $1 }'; }

image_size_bytes() { docker image inspect --format '{{.Size}}' "$1"; }

human_bytes() { awk -v b="$1" 'BEGIN { printf "%.2f MB (%d bytes)", b / 1e6, b }'; }
