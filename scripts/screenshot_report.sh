#!/usr/bin/env bash
# Screenshot a `posttrain report` HTML page with headless Chromium (offline: no network flags).
# Usage: scripts/screenshot_report.sh report.html [out.png] [height_px]
# Needs chromium (Debian: apt-get install -y chromium).
set -euo pipefail
html="${1:?usage: $0 report.html [out.png] [height_px]}"
out="${2:-${html%.html}.png}"
height="${3:-6000}"
browser="$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)"
if [[ -z "$browser" ]]; then
  echo "error: no chromium found (fix: apt-get install -y chromium)" >&2
  exit 2
fi
profile="$(mktemp -d)"
trap 'rm -rf "$profile"' EXIT
"$browser" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$profile" --screenshot="$out" --window-size="1400,${height}" \
  "file://$(realpath "$html")" 2>/dev/null
echo "$out"
