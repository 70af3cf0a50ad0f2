#!/usr/bin/env bash
# Makes sure `ip` and `tc` (Debian's iproute2) are on this machine: the fault tests build
# network namespaces with veth pairs and shape them with tc netem. Installs it when missing.
set -euo pipefail

if command -v ip >/dev/null 2>&1 && command -v tc >/dev/null 2>&1; then
  exit 0
fi
echo "ip/tc not found; installing Debian's iproute2 package" >&2
if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq iproute2 >/dev/null
command -v ip >/dev/null 2>&1 || { echo "iproute2 install did not provide ip" >&2; exit 1; }
