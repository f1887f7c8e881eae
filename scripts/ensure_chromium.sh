#!/usr/bin/env bash
# Install Debian's Chromium for the browser test when /usr/bin/chromium is missing (never a browser
# download of Playwright's own: only the distribution's package registry is reachable).
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
  exit 0
fi
bash "$(dirname "$0")/apt_install.sh" ensure_chromium chromium fonts-dejavu-core
test -x /usr/bin/chromium
echo "ensure_chromium: installed $(/usr/bin/chromium --version 2>/dev/null || echo chromium)"
