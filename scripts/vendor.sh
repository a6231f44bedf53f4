#!/usr/bin/env bash
# Re-create the vendored front-end files in static/vendor/ from the exact pins
# in static/vendor/package.json, using npm in a throwaway temp dir.
#
# Usage: scripts/vendor.sh
#
# Idempotent: it rebuilds every generated file from the pins; README.md and
# package.json in static/vendor/ are hand-maintained and left alone. Running it
# twice with the same pins gives byte-identical files. CI does not run it: the
# copies are committed. To upgrade, edit the pins in static/vendor/package.json
# (keep them exact, no ^ or ~), run this script, re-check the global names and
# update static/vendor/README.md.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENDOR="$ROOT/static/vendor"
PINS="$VENDOR/package.json"

command -v npm >/dev/null 2>&1 || { echo "vendor.sh: npm not found (apt-get install npm)" >&2; exit 1; }
command -v node >/dev/null 2>&1 || { echo "vendor.sh: node not found" >&2; exit 1; }
[ -f "$PINS" ] || { echo "vendor.sh: $PINS missing" >&2; exit 1; }

# Refuse ranges: the pins must be exact versions.
node -e '
  const deps = require(process.argv[1]).dependencies || {};
  const bad = Object.entries(deps).filter(([, v]) => !/^\d+\.\d+\.\d+$/.test(v));
  if (bad.length) { console.error("vendor.sh: pins must be exact versions: " + JSON.stringify(bad)); process.exit(1); }
' "$PINS"

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

cp "$PINS" "$TMP/package.json"
(
  cd "$TMP"
  npm install --ignore-scripts --no-audit --no-fund --no-package-lock --loglevel=error >/dev/null
)
NM="$TMP/node_modules"

# Check that npm installed exactly the pinned versions.
node -e '
  const path = require("path");
  const [pins, nm] = process.argv.slice(1);
  const deps = require(pins).dependencies;
  let ok = true;
  for (const [name, want] of Object.entries(deps)) {
    const got = require(path.join(nm, name, "package.json")).version;
    if (got !== want) { console.error(`vendor.sh: ${name}: wanted ${want}, npm installed ${got}`); ok = false; }
  }
  process.exit(ok ? 0 : 1);
' "$PINS" "$NM"

# Build the new tree in a staging dir, then swap it in, so a failure midway
# leaves static/vendor/ as it was.
STAGE="$TMP/stage"
mkdir -p "$STAGE/htmx" "$STAGE/xterm" "$STAGE/asciinema-player" "$STAGE/swagger-ui" \
  "$STAGE/simplewebauthn" "$STAGE/tus-js-client" "$STAGE/codemirror"

# htmx: the minified browser build, defines window.htmx.
cp "$NM/htmx.org/dist/htmx.min.js" "$STAGE/htmx/htmx.min.js"
cp "$NM/htmx.org/LICENSE" "$STAGE/htmx/LICENSE"

# xterm.js: the UMD builds (lib/*.js, not lib/*.mjs), usable from a plain
# <script> tag. xterm.js defines window.Terminal (and the rest of its exports);
# each addon defines window.<Name>Addon.<Name>Addon.
cp "$NM/@xterm/xterm/lib/xterm.js" "$STAGE/xterm/xterm.js"
cp "$NM/@xterm/xterm/css/xterm.css" "$STAGE/xterm/xterm.css"
cp "$NM/@xterm/xterm/LICENSE" "$STAGE/xterm/LICENSE"
for addon in fit web-links search unicode11 webgl; do
  cp "$NM/@xterm/addon-$addon/lib/addon-$addon.js" "$STAGE/xterm/addon-$addon.js"
  cp "$NM/@xterm/addon-$addon/LICENSE" "$STAGE/xterm/LICENSE.addon-$addon"
done

# asciinema-player: the self-contained browser bundle (terminal emulator wasm
# inlined), defines window.AsciinemaPlayer.
cp "$NM/asciinema-player/dist/bundle/asciinema-player.min.js" "$STAGE/asciinema-player/asciinema-player.min.js"
cp "$NM/asciinema-player/dist/bundle/asciinema-player.css" "$STAGE/asciinema-player/asciinema-player.css"
cp "$NM/asciinema-player/LICENSE" "$STAGE/asciinema-player/LICENSE"
# The bundle has its runtime dependencies compiled in; ship their licences too.
{
  echo "Licences of third-party code compiled into asciinema-player.min.js"
  echo "(the asciinema-player bundle's runtime dependencies; all MIT)."
  for dep in solid-js solid-transition-group @solid-primitives/refs \
             @solid-primitives/transition-group @solid-primitives/utils @babel/runtime; do
    lic="$NM/$dep/LICENSE"
    [ -f "$lic" ] || { echo "vendor.sh: no LICENSE for $dep" >&2; exit 1; }
    echo
    echo "================================================================"
    echo "$dep"
    echo "================================================================"
    echo
    cat "$lic"
  done
} > "$STAGE/asciinema-player/THIRD-PARTY-LICENSES"

# tus-js-client: the browserify bundle (resumable uploads for the files drawer), defines
# window.tus. Its browser dependencies are compiled in: ship their licences too (buffer,
# base64-js and ieee754 come from browserify's Node shims, fetched at the versions below).
cp "$NM/tus-js-client/dist/tus.min.js" "$STAGE/tus-js-client/tus.min.js"
cp "$NM/tus-js-client/LICENSE" "$STAGE/tus-js-client/LICENSE"
(
  cd "$TMP"
  for shim in buffer@5.7.1 base64-js@1.5.1 ieee754@1.2.1; do
    npm pack "$shim" --loglevel=error >/dev/null
    mkdir -p "shim-${shim%@*}" && tar xzf "${shim%@*}-${shim#*@}.tgz" -C "shim-${shim%@*}"
  done
)
{
  echo "Licences of third-party code compiled into tus.min.js (tus-js-client's browser bundle)."
  for dep in js-base64 url-parse querystringify requires-port buffer base64-js ieee754; do
    if [ -d "$TMP/shim-$dep" ]; then dir="$TMP/shim-$dep/package"; else dir="$NM/$dep"; fi
    lic="$(ls "$dir"/LICENSE* "$dir"/LICENCE* 2>/dev/null | head -1 || true)"
    [ -n "$lic" ] || { echo "vendor.sh: no LICENSE for $dep" >&2; exit 1; }
    echo
    echo "================================================================"
    echo "$dep $(node -p 'require(process.argv[1]).version' "$dir/package.json")"
    echo "================================================================"
    echo
    cat "$lic"
  done
} > "$STAGE/tus-js-client/THIRD-PARTY-LICENSES"

# CodeMirror 5: the single-file browser build (CodeMirror 6 has no such bundle), defines
# window.CodeMirror. The editor in the files drawer; no language modes.
cp "$NM/codemirror/lib/codemirror.js" "$STAGE/codemirror/codemirror.js"
cp "$NM/codemirror/lib/codemirror.css" "$STAGE/codemirror/codemirror.css"
cp "$NM/codemirror/LICENSE" "$STAGE/codemirror/LICENSE"

# Swap in: replace only the generated folders; keep README.md and package.json.
# swagger-ui-dist: the /api/docs page (bundle + CSS; the initializer is our static/js/api-docs.js).
for f in swagger-ui-bundle.js swagger-ui.css LICENSE NOTICE; do
  cp "$NM/swagger-ui-dist/$f" "$STAGE/swagger-ui/$f"
done
cp "$NM/swagger-ui-dist/swagger-ui-bundle.js.LICENSE.txt" "$STAGE/swagger-ui/THIRD-PARTY-LICENSES"

# @simplewebauthn/browser: the minified UMD bundle (passkey ceremonies on the MFA, sign-in
# and step-up pages), defines window.SimpleWebAuthnBrowser. No runtime dependencies.
cp "$NM/@simplewebauthn/browser/dist/bundle/index.umd.min.js" "$STAGE/simplewebauthn/index.umd.min.js"
cp "$NM/@simplewebauthn/browser/LICENSE.md" "$STAGE/simplewebauthn/LICENSE.md"

for d in htmx xterm asciinema-player swagger-ui simplewebauthn tus-js-client codemirror; do
  rm -rf "$VENDOR/$d"
  cp -R "$STAGE/$d" "$VENDOR/$d"
done
chmod -R u=rwX,go=rX "$VENDOR/htmx" "$VENDOR/xterm" "$VENDOR/asciinema-player" "$VENDOR/swagger-ui" \
  "$VENDOR/simplewebauthn" "$VENDOR/tus-js-client" "$VENDOR/codemirror"

echo "vendor.sh: static/vendor re-created from $(node -p 'Object.entries(require(process.argv[1]).dependencies).map(([n,v])=>n+"@"+v).join(", ")' "$PINS")"
