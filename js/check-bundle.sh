#!/usr/bin/env bash
# Fail if the committed bundle in hope_widgets/static/ is not what js/src builds to (run after editing js/src:
# `cd js && npm ci && npm run build`, then commit hope_widgets/static/), or if js/src/contract.d.ts is not what
# hope_widgets/contract.schema.json generates (`node js/contract-types.mjs`).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"
if [ ! -x node_modules/.bin/esbuild ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
node build.mjs "$tmp" >/dev/null
status=0
for f in widget.js widget.css; do
  if ! cmp -s "$tmp/$f" "../hope_widgets/static/$f"; then
    echo "stale bundle: hope_widgets/static/$f differs from a fresh build of js/src (run: cd js && npm run build)" >&2
    status=1
  fi
done
# the front end's types, generated from the panel's contract (hope_widgets/contract.schema.json)
if ! node contract-types.mjs --check; then
  status=1
fi
[ "$status" -eq 0 ] && echo "hope_widgets/static/ is up to date with js/src, and src/contract.d.ts with the contract"
exit "$status"
