#!/usr/bin/env bash
# Builds tether and runs the key server with its data (keys) in ./tether-data,
# created on first start. Extra arguments go to "tether server".
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export PATH="/usr/local/go/bin:$PATH"
mkdir -p bin
# Without cgo: a static binary, which starts faster and runs in any initramfs.
CGO_ENABLED=0 go build -o bin/tether ./cmd/tether
exec bin/tether server --listen "${TETHER_LISTEN:-:7500}" --data "${TETHER_DATA:-./tether-data}" "$@"
