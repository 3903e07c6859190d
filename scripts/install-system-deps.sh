#!/usr/bin/env bash
# Debian packages for the local stack and the tests: PostgreSQL 15 with pg_cron, pgTAP (+ pg_prove),
# plpgsql_check (for `supabase db lint`), Node.js/npm for the pinned Supabase CLI and the dashboard,
# Chromium (+ a font) for the dashboard's browser tests (playwright-core, executablePath /usr/bin/chromium).
# nghttp2-client: h2load, the HTTP load generator of benchmarks/load_webhook.py; valgrind: its instruction
# counts (benchmarks/load_instructions.py).
set -euo pipefail
packages=(
  postgresql-15 postgresql-client-15 postgresql-15-cron postgresql-15-pgtap postgresql-15-plpgsql-check
  libtap-parser-sourcehandler-pgtap-perl python3-venv
  prometheus prometheus-alertmanager
  nghttp2-client valgrind
  chromium fonts-dejavu-core
)
missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
command -v npm >/dev/null || missing+=(nodejs npm)
if ((${#missing[@]} == 0)); then
  echo "system packages: all present"
  exit 0
fi
# root installs; anyone else through sudo without a password prompt; otherwise stop at once, saying how
sudo_cmd=()
if [[ $(id -u) -ne 0 ]]; then
  if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    sudo_cmd=(sudo -n)
  else
    echo "missing Debian packages: ${missing[*]} — run: sudo $0" >&2
    exit 1
  fi
fi
echo "installing ${#missing[@]} Debian package(s): ${missing[*]}"
"${sudo_cmd[@]}" apt-get update -q
DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
echo "system packages: installed"

