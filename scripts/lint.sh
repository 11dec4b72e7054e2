#!/usr/bin/env bash
# `npm run lint`: every static check, each run even when an earlier one failed (one pass shows all
# there is to fix); exits non-zero when any failed. Fast (about half a minute): CI runs it first.
set -uo pipefail
cd "$(dirname "$0")/.."
bin=node_modules/.bin
failed=()

check() {
  local name=$1
  shift
  echo "== lint: $name"
  "$@" || failed+=("$name")
}

check "typecheck (src, machines, bench, test)" "$bin/tsc" -p tsconfig.typecheck.json
check "dependency rules" "$bin/depcruise" src machines bench test --config .dependency-cruiser.cjs
check "format (prettier)" "$bin/prettier" --check --log-level warn '**/*.{ts,js,cjs}'
check "eslint" "$bin/eslint" --max-warnings 0 .
# Prettier wraps code at 110 but never breaks a string, template or comment: those are checked here.
check "line width (110)" awk 'length > 110 { print FILENAME ":" FNR ": " length " characters"; n++ } END { exit n > 0 }' \
  $(git ls-files '*.ts' '*.js' '*.cjs')

if [ ${#failed[@]} -gt 0 ]; then
  echo "lint failed: ${failed[*]}"
  exit 1
fi
echo "lint passed"
