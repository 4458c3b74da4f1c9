#!/usr/bin/env bash
# Builds tether, tether-server and tether-smb into bin/ and runs the key server with its
# data (keys) in ./tether-data, created on first start. Extra arguments go to
# "tether server".
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export PATH="/usr/local/go/bin:$PATH"
mkdir -p bin
# Without cgo: static binaries, which start faster and run in any initramfs.
CGO_ENABLED=0 go build -o bin/ ./cmd/tether ./cmd/tether-server ./cmd/tether-smb
exec bin/tether-server server --listen "${TETHER_LISTEN:-:7500}" --data "${TETHER_DATA:-./tether-data}" "$@"
