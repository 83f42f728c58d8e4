#!/bin/sh
# mmdebstrap customize hook: trims the rootfs at $1 down to what sidecar-bundle's images use.
# Every removal below is something no daemon, pack handler or agent test needs; dpkg still lists
# the owning packages (so apt keeps working), only the files are gone. See docs/images.md.
set -eu
root=${1:?usage: slim-rootfs.sh ROOTFS}
cd "$root"

# Perl: git's core commands are C or shell; only git-send-email/git-svn/cvs*/instaweb/archimport
# (not used here) need the full perl library. perl-base (Essential, used by debconf/adduser) stays.
rm -rf usr/share/perl/5.* usr/lib/x86_64-linux-gnu/perl/5.* usr/lib/x86_64-linux-gnu/perl/debian-config-data-* \
       usr/lib/x86_64-linux-gnu/libperl.so.5.* usr/bin/perl5.*.*

# glibc iconv modules: UTF-8/16/32, ASCII and Latin-1 are built into libc; the rest are legacy charsets.
rm -f usr/lib/x86_64-linux-gnu/gconv/*.so usr/lib/x86_64-linux-gnu/gconv/gconv-modules.cache
rm -rf usr/lib/x86_64-linux-gnu/gconv/gconv-modules.d

# git helpers nobody here runs (IMAP, dumb-HTTP push/fetch, scalar, restricted login shell).
# Kept: git, git-daemon, git-remote-http(s), git-http-backend, git-sh-i18n--envsubst.
rm -f usr/lib/git-core/git-imap-send usr/lib/git-core/git-http-push usr/lib/git-core/git-http-fetch \
      usr/lib/git-core/scalar usr/lib/git-core/git-shell usr/bin/scalar usr/bin/git-shell
rm -rf usr/share/git-core/contrib usr/share/gitweb

# Python: test suite, IDLE, pydoc's topic data, turtle demo, and their bytecode.
for d in test idlelib pydoc_data turtledemo lib2to3 ensurepip tkinter; do
  rm -rf "usr/lib/python3.11/$d"
done
rm -f usr/lib/python3.11/turtle.py usr/lib/python3.11/__pycache__/turtle.*.pyc

# Caches, logs and backups that only describe the build.
rm -rf var/cache/apt/*.bin var/cache/apt/archives/*.deb var/lib/apt/lists/* var/cache/ldconfig/aux-cache \
       var/cache/debconf/*-old var/lib/dpkg/*-old var/log/*.log var/log/apt/* \
       etc/machine-id var/lib/dbus/machine-id
: > var/log/lastlog 2>/dev/null || true
: > var/log/faillog 2>/dev/null || true
