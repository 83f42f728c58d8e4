#!/usr/bin/env bash
# Builds the Debian bookworm rootfs tarball behind sidecar-bundle/debian-base:bookworm with
# mmdebstrap (minbase + images/base/packages.txt), then slims it (scripts/images/slim-rootfs.sh).
# Needs root (or a working `mmdebstrap --mode=unshare`) and Debian's package mirror; nothing else.
#
# usage: scripts/images/mkrootfs.sh OUT.tar [PACKAGES_FILE]
# env:   DEBIAN_SUITE (bookworm), DEBIAN_MIRROR (http://deb.debian.org/debian),
#        DEBIAN_SECURITY_MIRROR (http://deb.debian.org/debian-security), MMDEBSTRAP_MODE (auto)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
out=${1:?usage: mkrootfs.sh OUT.tar [PACKAGES_FILE]}
pkgfile=${2:-$here/../../images/base/packages.txt}
suite=${DEBIAN_SUITE:-bookworm}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
security=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
mode=${MMDEBSTRAP_MODE:-auto}

command -v mmdebstrap >/dev/null || { echo "mkrootfs: mmdebstrap is not installed (apt-get install mmdebstrap)" >&2; exit 1; }

pkgs=$(sed -e 's/#.*//' "$pkgfile" | xargs | tr ' ' ',')
[ -n "$pkgs" ] || { echo "mkrootfs: no packages in $pkgfile" >&2; exit 1; }

# Paths dpkg never unpacks (kept in the image's /etc/dpkg/dpkg.cfg.d, like Docker's official
# slim images, so packages installed later stay slim too). Copyright files are kept.
dpkgopts=(
  --dpkgopt='path-exclude=/usr/share/doc/*'
  --dpkgopt='path-include=/usr/share/doc/*/copyright'
  --dpkgopt='path-exclude=/usr/share/man/*'
  --dpkgopt='path-exclude=/usr/share/info/*'
  --dpkgopt='path-exclude=/usr/share/locale/*'
  --dpkgopt='path-include=/usr/share/locale/locale.alias'
  --dpkgopt='path-exclude=/usr/share/lintian/*'
  --dpkgopt='path-exclude=/usr/share/linda/*'
  --dpkgopt='path-exclude=/usr/share/groff/*'
  --dpkgopt='path-exclude=/usr/share/bash-completion/*'
  --dpkgopt='path-exclude=/usr/share/gitweb/*'
)

tmp="$out.tmp.$$"
trap 'rm -f "$tmp"' EXIT
mmdebstrap --quiet --mode="$mode" --variant=minbase --format=tar \
  --include="$pkgs" \
  --aptopt='APT::Install-Recommends "false"' \
  --aptopt='APT::Install-Suggests "false"' \
  "${dpkgopts[@]}" \
  --customize-hook="\"$here/slim-rootfs.sh\" \"\$1\"" \
  "$suite" "$tmp" \
  "deb $mirror $suite main" \
  "deb $mirror $suite-updates main" \
  "deb $security $suite-security main"
mv -f "$tmp" "$out"
trap - EXIT
