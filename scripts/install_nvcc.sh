#!/bin/sh
# Installs nvcc (Debian's nvidia-cuda-toolkit, CUDA 11.8) on a fresh Debian
# bookworm machine, from the non-free component. Idempotent: does nothing when
# nvcc is already on PATH. Needs root (or sudo) and network access to
# the machine's Debian mirror. See DESIGN.md section 4.
set -eu

if command -v nvcc >/dev/null 2>&1; then
	echo "nvcc already installed: $(command -v nvcc)"
	nvcc --version | tail -n 2
	exit 0
fi

SUDO=
if [ "$(id -u)" -ne 0 ]; then
	SUDO=sudo
fi

# Add the contrib/non-free components of the Debian mirror this machine
# already uses (read from its apt sources, so no host is hard-coded here).
SRC=/etc/apt/sources.list.d/nonfree.sources
if [ ! -f "$SRC" ]; then
	URI=$(awk '/^URIs:/ { print $2; exit }' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
	[ -n "$URI" ] || URI=$(awk '$1 == "deb" { print $2; exit }' /etc/apt/sources.list 2>/dev/null || true)
	[ -n "$URI" ] || { echo "install_nvcc.sh: no Debian mirror found in the apt sources" >&2; exit 1; }
	CODENAME=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
	$SUDO tee "$SRC" >/dev/null <<SOURCES
Types: deb
URIs: $URI
Suites: $CODENAME $CODENAME-updates
Components: contrib non-free non-free-firmware
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends nvidia-cuda-toolkit

command -v nvcc >/dev/null 2>&1 || { echo "install_nvcc.sh: nvcc still not on PATH" >&2; exit 1; }
nvcc --version | tail -n 2
