#!/usr/bin/env bash
# One-step set-up: system packages (via apt-get where possible), a virtual
# environment and the Python packages. Safe to run again; it only does what
# is missing.  Usage: scripts/setup.sh [--browser]
#   --browser  also make sure what the tests drive is installed, all Debian
#              packages, never downloaded by the tests: Chromium, Firefox ESR
#              (with PulseAudio for its sound), WebKitGTK's WebKitWebDriver +
#              MiniBrowser (under Xvfb), Caddy (tests/test_https.py runs it in
#              front of a gateway), prometheus (promtool and a real Prometheus
#              for tests/test_dashboard.py); and axe-core (the accessibility
#              audit) in $VENV/axe
set -euo pipefail

cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
want_browser=0
[ "${1:-}" = "--browser" ] && want_browser=1

say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

have_libopus() { ldconfig -p 2>/dev/null | grep -q 'libopus\.so\.0' || [ -e /usr/lib/x86_64-linux-gnu/libopus.so.0 ] || [ -e /usr/lib/aarch64-linux-gnu/libopus.so.0 ]; }
have_redis() { command -v redis-server >/dev/null 2>&1; }
have_redis_cli() { command -v redis-cli >/dev/null 2>&1; }  # creates the tests' Redis Cluster
have_chromium() { [ -x /usr/bin/chromium ]; }
have_command() { command -v "$1" >/dev/null 2>&1; }
have_venv_module() { "$PYTHON" -c 'import ensurepip, venv' >/dev/null 2>&1; }

missing=()
have_libopus || missing+=(libopus0)
have_redis || missing+=(redis-server)
have_redis_cli || missing+=(redis-tools)
if [ "$want_browser" = 1 ]; then
  have_chromium || missing+=(chromium)
  have_command firefox-esr || missing+=(firefox-esr)
  have_command WebKitWebDriver || missing+=(webkit2gtk-driver)
  have_command Xvfb || missing+=(xvfb)
  have_command pulseaudio || missing+=(pulseaudio)
  have_command caddy || missing+=(caddy)
  { have_command prometheus && have_command promtool; } || missing+=(prometheus)
  # Native stacks of a browser page that stops answering (tests/engines/hang.py).
  have_command gdb || missing+=(gdb)
fi
have_venv_module || missing+=(python3-venv)

if [ ${#missing[@]} -gt 0 ]; then
  say "system packages missing: ${missing[*]}"
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""
    if [ "$(id -u)" != 0 ]; then
      if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
        say "ERROR: not root and no sudo. As root, run: apt-get install -y ${missing[*]}"; exit 1
      fi
    fi
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -q || say "apt-get update failed; trying the install with the lists at hand"
    $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
  else
    say "ERROR: no apt-get on this system. Install these yourself, then run make again:"
    say "  libopus (the Opus codec library: Fedora 'opus', Arch 'opus', Homebrew 'opus')"
    say "  redis-server (Redis 6.2 or newer)"
    [ "$want_browser" = 1 ] && say "  for 'make test': chromium at /usr/bin/chromium, firefox-esr, webkit2gtk-driver (WebKitWebDriver, MiniBrowser), Xvfb, pulseaudio, caddy, prometheus (with promtool), gdb"
    exit 1
  fi
fi

if [ ! -x "$VENV/bin/python" ]; then
  say "creating virtual environment in $VENV"
  "$PYTHON" -m venv "$VENV"
fi
stamp="$VENV/.installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  say "installing Python packages"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -e '.[dev]'
  touch "$stamp"
fi
# axe-core for the page's accessibility audit (tests/test_browser_choir.py),
# from the npm registry into the venv: no CDN at test time. Pinned to one
# version so that an audit's findings do not change under the tests.
AXE_VERSION="4.10.3"
if [ "$want_browser" = 1 ] && [ ! -f "$VENV/axe/node_modules/axe-core/axe.min.js" ]; then
  if command -v npm >/dev/null 2>&1; then
    say "installing axe-core $AXE_VERSION (npm) into $VENV/axe"
    npm install --silent --no-audit --no-fund --prefix "$VENV/axe" "axe-core@$AXE_VERSION"
  else
    say "WARNING: npm not found: the accessibility audit cannot run (install nodejs and npm)"
  fi
fi
say "ready"
