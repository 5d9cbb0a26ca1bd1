#!/bin/sh
# Runs a command with Node.js 24 LTS first on PATH and the project's dependencies installed.
# The system Node may be older (Node 20 is end of life): then Node 24 is installed once from the
# npm registry into .cache/node24 (override with COURRIER_NODE24_DIR).
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if [ "$major" -lt 24 ]; then
  dir=${COURRIER_NODE24_DIR:-"$here/.cache/node24"}
  if [ ! -x "$dir/bin/node" ]; then
    echo "courrier: Node $(node -v 2>/dev/null || echo none) is too old; installing Node 24 LTS into $dir" >&2
    npm install --silent -g --prefix "$dir" node@24 >&2
  fi
  PATH="$dir/bin:$PATH"
  export PATH
fi
# Install or refresh dependencies when the lockfile changed since the last install. `npm install`
# rather than `npm ci`: the lockfile pins every version, but it cannot list msgpackr-extract's
# prebuilt packages for other platforms (the registry reachable here does not serve them), and
# `npm ci` refuses a lockfile with such gaps. `npm install` keeps to the lockfile all the same, and
# `--no-save` leaves it untouched (no dirty checkout after `npm start`).
if [ ! -f "$here/node_modules/.package-lock.json" ] || [ "$here/package-lock.json" -nt "$here/node_modules/.package-lock.json" ]; then
  (cd "$here" && npm install --no-save --no-audit --no-fund --loglevel=error >&2)
fi
PATH="$here/node_modules/.bin:$PATH"
export PATH
exec "$@"
