#!/usr/bin/env bash
# Install Debian packages with apt-get, as root or through sudo, quietly and without recommends.
# Used by the ensure_* scripts, which first check whether what they need is already there.
# Usage: apt_install.sh WHO PACKAGE...   (WHO names the caller in the error message)
set -euo pipefail
who="$1"
shift
if ! command -v apt-get >/dev/null 2>&1; then
  echo "$who: apt-get is not available; install $* with this system's package manager" >&2
  exit 1
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then
  SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "$@" >/dev/null
