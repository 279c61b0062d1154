#!/bin/sh
# Make sure a Docker engine answers, for `sam local` and tests/sam (idempotent).
#
# - `docker info` works already: nothing to do (Docker Desktop, a system service, an engine from an earlier run).
# - otherwise, as root: install Debian's docker.io if dockerd is missing, then start
#       dockerd --bridge=none --iptables=false
#   in the background (log: $DOCKERD_LOG), and wait until it answers. No bridge and no iptables rules: nothing but
#   loopback is used, and containers run with host networking (tools/sam_host_network.py forces it for SAM, which
#   ignores `--docker-network host`, aws-sam-cli#4236).
#
# Optional environment:
#   DOCKER_SOCKET   socket dockerd listens on (default /var/run/docker.sock, Docker's default: no DOCKER_HOST needed)
#   DOCKERD_LOG     dockerd's log (default /var/log/pluggy-pipeline-dockerd.log)
#   DOCKER_WAIT     seconds to wait for the engine (default 60)
# Prints `export DOCKER_HOST=...` when the socket is not Docker's default.
set -eu
DOCKER_SOCKET=${DOCKER_SOCKET:-/var/run/docker.sock}
DOCKERD_LOG=${DOCKERD_LOG:-/var/log/pluggy-pipeline-dockerd.log}
DOCKER_WAIT=${DOCKER_WAIT:-60}

if [ "$DOCKER_SOCKET" != /var/run/docker.sock ]; then
    export DOCKER_HOST="unix://$DOCKER_SOCKET"
fi

answers() {
    command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1
}

if answers; then
    echo "docker-up: the Docker engine answers ($(docker version --format '{{.Server.Version}}' 2>/dev/null || echo '?'))"
    [ -z "${DOCKER_HOST:-}" ] || echo "export DOCKER_HOST=$DOCKER_HOST"
    exit 0
fi

if [ "$(id -u)" != 0 ]; then
    echo "docker-up: no Docker engine answers, and starting one needs root (run: sudo $0)" >&2
    exit 1
fi

if ! command -v dockerd >/dev/null 2>&1; then
    echo "docker-up: installing Debian's docker.io"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q docker.io >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q docker.io >/dev/null; }
fi

# Is the dockerd of the pid file alive (not gone, not a zombie)? Then it is starting: wait for it.
pidfile=/var/run/docker.pid
dockerd_alive() {
    pid=$(cat "$pidfile" 2>/dev/null) || return 1
    [ -n "$pid" ] && [ -r "/proc/$pid/stat" ] || return 1
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = dockerd ] && [ "$(awk '{print $3}' "/proc/$pid/stat")" != Z ]
}

if ! dockerd_alive; then
    # A pid file or socket left by an engine that was killed would stop dockerd from starting.
    rm -f "$pidfile"
    [ ! -S "$DOCKER_SOCKET" ] || rm -f "$DOCKER_SOCKET"
    mkdir -p "$(dirname "$DOCKER_SOCKET")" "$(dirname "$DOCKERD_LOG")"
    echo "docker-up: starting dockerd (no bridge, no iptables; log $DOCKERD_LOG)"
    # setsid + nohup: the engine outlives this script and the shell that ran it.
    setsid nohup dockerd --bridge=none --iptables=false --ip-masq=false \
        --host "unix://$DOCKER_SOCKET" --pidfile "$pidfile" >>"$DOCKERD_LOG" 2>&1 </dev/null &
    started=$!
fi

waited=0
until docker info >/dev/null 2>&1; do
    if [ -n "${started:-}" ] && ! kill -0 "$started" 2>/dev/null; then
        echo "docker-up: dockerd exited; last lines of $DOCKERD_LOG:" >&2
        tail -n 20 "$DOCKERD_LOG" >&2 || true
        exit 1
    fi
    if [ "$waited" -ge "$DOCKER_WAIT" ]; then
        echo "docker-up: dockerd did not answer within ${DOCKER_WAIT}s; last lines of $DOCKERD_LOG:" >&2
        tail -n 20 "$DOCKERD_LOG" >&2 || true
        exit 1
    fi
    sleep 1
    waited=$((waited + 1))
done
echo "docker-up: the Docker engine answers ($(docker version --format '{{.Server.Version}}' 2>/dev/null || echo '?'), ${waited}s)"
[ -z "${DOCKER_HOST:-}" ] || echo "export DOCKER_HOST=$DOCKER_HOST"
