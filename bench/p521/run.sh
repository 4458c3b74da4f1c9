#!/bin/sh
# Prints jose/internal/p521 vs `openssl speed ecdhp521` (and nistec, crypto/ecdh)
# side by side with the ratio. Usage: bench/p521/run.sh [-seconds 3] [-rounds 5]
set -e
cd "$(dirname "$0")/../.."
exec go run ./jose/internal/p521/bench "$@"
