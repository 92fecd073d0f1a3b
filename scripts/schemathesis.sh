#!/usr/bin/env bash
# API fuzzing of a live server against proto/openapi.yaml with schemathesis
# (issue 6, "Faults and hostile input"): builds the release server, starts it
# on a free loopback port with a temporary data directory and a bearer token,
# runs schemathesis with the checks below over every operation, stops the
# server and exits non-zero on any finding.
#
#   scripts/schemathesis.sh                 # 100 examples per operation
#   MAX_EXAMPLES=1000 scripts/schemathesis.sh
#
# schemathesis comes from PyPI into .schemathesis/ (git-ignored), pinned.
set -euo pipefail
cd "$(dirname "$0")/.."

SCHEMATHESIS_VERSION=4.32.5
MAX_EXAMPLES=${MAX_EXAMPLES:-100}
CHECKS=not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance
TOKEN=schemathesis-token

if [ ! -x .schemathesis/bin/schemathesis ]; then
    python3 -m venv .schemathesis
    .schemathesis/bin/pip install --quiet "schemathesis==${SCHEMATHESIS_VERSION}"
fi

cargo build --release --quiet
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
data_dir=$(mktemp -d)
log="$data_dir.server.log"
target/release/htm-stream serve --listen "127.0.0.1:$port" --data-dir "$data_dir" \
    --token "$TOKEN" >"$log" 2>&1 &
server=$!
cleanup() {
    kill -TERM "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
    rm -rf "$data_dir"
}
trap cleanup EXIT

for _ in $(seq 100); do
    curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
    sleep 0.1
done

status=0
.schemathesis/bin/schemathesis run proto/openapi.yaml \
    --url "http://127.0.0.1:$port" \
    --header "Authorization: Bearer $TOKEN" \
    --checks "$CHECKS" \
    --max-examples "$MAX_EXAMPLES" \
    --seed "${SEED:-1}" \
    --no-color || status=$?

kill -TERM "$server"
if ! wait "$server"; then
    echo "server did not stop cleanly; its log: $log" >&2
    status=1
fi
exit "$status"
