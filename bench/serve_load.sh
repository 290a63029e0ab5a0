#!/usr/bin/env bash
# Load test of `unitok serve` on loopback: single-feature-set encode requests
# at concurrency 1, 8, 64, 256, then the direct batched library baseline.
# Bounded: each level runs DURATION (default 5s) or MAX requests, then the
# server is stopped with SIGTERM (its drain must exit 0).
#   bench/serve_load.sh [CKPT] [FEATURES.npy] > table.md
set -euo pipefail
cd "$(dirname "$0")/.."
CKPT=${1:-testdata/sample/model.safetensors}
IN=${2:-testdata/sample/features.npy}
DUR=${DURATION:-5s}
PORT=${PORT:-18080}
BIN=$(mktemp -d)/unitok
go build -o "$BIN" ./cmd/unitok
# A small queue so that concurrency 256 exceeds it and shows 429s.
"$BIN" serve --checkpoint "$CKPT" --addr 127.0.0.1:$PORT --device cpu --threads ${THREADS:-0} --queue ${QUEUE:-128} --max-wait ${MAXWAIT:-2ms} --max-batch ${MAXBATCH:-64} 2>/tmp/unitok-serve.log &
SPID=$!
trap 'kill $SPID 2>/dev/null || true' EXIT
for _ in $(seq 50); do curl -sf http://127.0.0.1:$PORT/readyz >/dev/null && break; sleep 0.1; done
echo "# unitok serve load test ($(date -u +%F), $(nproc) cores, CPU engine, checkpoint $CKPT, features $IN, ${TOKENS:-64} tokens per request, server --max-batch ${MAXBATCH:-64} --max-wait ${MAXWAIT:-2ms} --queue ${QUEUE:-128} --threads ${THREADS:-0}; 0 = all cores)"
echo
echo "Measured on a shared, noisy machine (other jobs running): read ratios from the same run, not absolute numbers."
echo
"$BIN" loadgen --addr http://127.0.0.1:$PORT --checkpoint "$CKPT" --device cpu --threads ${THREADS:-0} --in "$IN" --tokens ${TOKENS:-64} --duration "$DUR" --server-pid $SPID --baseline-batch ${MAXBATCH:-64}
kill -TERM $SPID
wait $SPID && echo && echo "server drained and exited 0 on SIGTERM"
trap - EXIT
