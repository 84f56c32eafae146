#!/usr/bin/env bash
# The headless browser of the page tests: Debian's `chromium` package, installed with apt-get when
# /usr/bin/chromium is missing (as root, or through sudo). Prints the browser's path on stdout; progress and
# errors go to stderr. Playwright for Python drives it (no `playwright install`: browsers are never
# downloaded, the Debian build is used as it is).
#
#   deploy/local/browser.sh            install when missing, print the path
set -euo pipefail

CACHE="${AFTERSALES_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/aftersales}"
LOGS="$CACHE/logs"
CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"

say() { printf '[browser] %s\n' "$*" >&2; }
die() { printf '[browser] ERROR: %s\n' "$*" >&2; exit 1; }

if [[ ! -x "$CHROMIUM" ]]; then
  command -v apt-get >/dev/null || die "$CHROMIUM is missing and apt-get is not available; install Chromium"
  as_root=()
  if [[ "$(id -u)" != 0 ]]; then
    command -v sudo >/dev/null || die "installing the chromium package needs root (or sudo)"
    as_root=(sudo -n)
  fi
  mkdir -p "$LOGS"
  say "installing Debian's chromium package (first run only; log $LOGS/browser-install.log)"
  {
    # Another script may be installing at the same time: wait for dpkg's lock instead of failing.
    "${as_root[@]}" apt-get -o DPkg::Lock::Timeout=600 update -q
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
      apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends chromium
  } >"$LOGS/browser-install.log" 2>&1 \
    || { tail -20 "$LOGS/browser-install.log" >&2; die "apt-get install chromium failed"; }
  [[ -x "$CHROMIUM" ]] || die "the chromium package did not provide $CHROMIUM"
fi
echo "$CHROMIUM"
