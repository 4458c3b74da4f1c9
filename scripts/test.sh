#!/usr/bin/env bash
# Installs the real peers (tang, clevis, cryptsetup, ...) and runs the whole
# test suite. With CI=true a missing peer fails the run instead of skipping.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test
export PATH="/usr/local/go/bin:$PATH"
echo "== go vet" >&2
go vet ./...
echo "== gofmt" >&2
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [[ -n "$unformatted" ]]; then
  echo "gofmt would change: $unformatted" >&2
  exit 1
fi
echo "== go test" >&2
go test -count=1 -timeout 25m "$@" ./...
