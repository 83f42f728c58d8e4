#!/usr/bin/env bash
# Builds sidecar-bundle's images OFFLINE: no registry is needed, only Debian's package mirror the
# first time (for the base rootfs). Idempotent and cached; a second run takes seconds.
#
#   1. static release binaries (musl) on the host, staged into prebuilt/ (the build context)
#   2. Debian bookworm rootfs with mmdebstrap, cached as a tarball keyed by its inputs
#   3. `docker import` of that rootfs as sidecar-bundle/debian-base:bookworm, and on it
#      sidecar-bundle/agent-test:<tag> (images/agent-test/: the demo agent and demo upstream)
#   4. sidecar-bundle/sidecars:<tag>       from Dockerfile.sidecars
#   5. sidecar-bundle/control-plane:<tag>  from Dockerfile.control-plane
#
# usage: scripts/images.sh [--only base|sidecars|control-plane] [--skip-cargo] [-v|--verbose]
# env:   IMAGE_TAG (dev), IMAGE_REPO (sidecar-bundle), SIDECAR_BUNDLE_CACHE (/var/cache/sidecar-bundle),
#        IMAGES_VERBOSE=1, DEBIAN_MIRROR / DEBIAN_SECURITY_MIRROR / MMDEBSTRAP_MODE (see mkrootfs.sh)
# See docs/images.md.
set -euo pipefail

# Bump when the way the base rootfs is made changes in a way the hashed files don't show.
SCRIPT_VERSION=1

cd "$(dirname "$0")/.."
root=$(pwd)

only=all
skip_cargo=0
verbose=${IMAGES_VERBOSE:-0}
while [ $# -gt 0 ]; do
  case "$1" in
    --only) only=${2:-}; shift 2 || true ;;
    --only=*) only=${1#--only=}; shift ;;
    --skip-cargo) skip_cargo=1; shift ;;
    -v|--verbose) verbose=1; shift ;;
    -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "images: unknown argument: $1 (try --help)" >&2; exit 2 ;;
  esac
done
case "$only" in
  all|base|sidecars|control-plane) ;;
  *) echo "images: --only takes base, sidecars or control-plane (got '$only')" >&2; exit 2 ;;
esac

tag=${IMAGE_TAG:-dev}
repo=${IMAGE_REPO:-sidecar-bundle}
cache=${SIDECAR_BUNDLE_CACHE:-/var/cache/sidecar-bundle}
export DOCKER_BUILDKIT=0   # this engine has only the legacy builder; the Dockerfiles work with both
musl=x86_64-unknown-linux-musl
bins=(sidecar-init sidecars control-plane)
t_start=$(date +%s.%N)

step() { printf 'images: %s\n' "$*"; }
die() { printf 'images: FAILED: %s\n' "$*" >&2; exit 1; }
# run LOGNAME CMD...: quiet unless verbose; on failure show the log's tail and where it is.
run() {
  local name=$1; shift
  local log="$logdir/$name.log"
  local rc=0
  if [ "$verbose" = 1 ]; then
    "$@" 2>&1 | tee "$log" || rc=${PIPESTATUS[0]}
  else
    "$@" >"$log" 2>&1 || rc=$?
  fi
  if [ "$rc" != 0 ]; then
    [ "$verbose" = 1 ] || tail -n 40 "$log" | sed 's/^/    /' >&2
    die "$name (exit $rc; full log: $log)"
  fi
}
elapsed() { awk -v a="$(date +%s.%N)" -v b="$1" 'BEGIN { printf "%.1fs", a - b }'; }

command -v docker >/dev/null || die "docker CLI not found"
docker info >/dev/null 2>&1 || die "cannot talk to the Docker daemon (is it running? are you in the docker group?)"
mkdir -p "$cache" || die "cannot create cache dir $cache (set SIDECAR_BUNDLE_CACHE)"
logdir="$cache/logs"; mkdir -p "$logdir"

# ---- 1. static binaries --------------------------------------------------------------------------
build_binaries() {
  local t0; t0=$(date +%s.%N)
  command -v cargo >/dev/null || die "cargo not found (install Rust: https://rustup.rs)"
  # honours CARGO_TARGET_DIR and .cargo/config; plain target/ if the workspace can't be read
  local target_dir; target_dir=$(cargo metadata --format-version 1 --no-deps 2>/dev/null | jq -r .target_directory) \
    || target_dir=${CARGO_TARGET_DIR:-$root/target}
  local triple=$musl flags=()
  if [ ! -d "$(rustc --print sysroot)/lib/rustlib/$musl" ]; then
    triple=x86_64-unknown-linux-gnu
    export RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static"
    step "musl target not installed: falling back to static glibc ($triple, +crt-static)"
  fi
  local outdir="$target_dir/$triple/release"
  if [ "$skip_cargo" = 1 ]; then
    step "[1/5] binaries: --skip-cargo, using $outdir"
  else
    step "[1/5] binaries: cargo build --release --locked --target $triple"
    for b in "${bins[@]}"; do flags+=(-p "$b"); done
    if ! (run cargo cargo build --release --locked --target "$triple" "${flags[@]}"); then
      grep -q 'cannot update the lock file' "$logdir/cargo.log" \
        && echo "images: hint: Cargo.lock is out of date with the manifests; run 'cargo metadata >/dev/null' (or a plain 'cargo build') and commit Cargo.lock" >&2
      exit 1
    fi
  fi
  mkdir -p prebuilt
  for b in "${bins[@]}"; do
    [ -x "$outdir/$b" ] || die "binary $outdir/$b is missing"
    file -b "$outdir/$b" | grep -Eq 'statically linked|static-pie linked' \
      || die "$outdir/$b is not statically linked: $(file -b "$outdir/$b")"
    cmp -s "$outdir/$b" "prebuilt/$b" || install -m 0755 "$outdir/$b" "prebuilt/$b"
  done
  step "      staged into prebuilt/ ($(du -ch "${bins[@]/#/prebuilt/}" | tail -1 | cut -f1), static) in $(elapsed "$t0")"
}

# ---- 2+3. base rootfs and image ------------------------------------------------------------------
base_key=$( { echo "v$SCRIPT_VERSION ${DEBIAN_SUITE:-bookworm} ${DEBIAN_MIRROR:-} ${DEBIAN_SECURITY_MIRROR:-}";
              cat images/base/packages.txt scripts/images/mkrootfs.sh scripts/images/slim-rootfs.sh; } \
            | sha256sum | cut -c1-12)
base_tar="$cache/debian-base-bookworm-$base_key.tar"
base_keyed="$repo/debian-base:bookworm-$base_key"
base_image="$repo/debian-base:bookworm"

build_base() {
  local t0; t0=$(date +%s.%N)
  if [ -s "$base_tar" ]; then
    step "[2/5] base rootfs: cached ($base_tar)"
  else
    [ "$(id -u)" = 0 ] || [ "${MMDEBSTRAP_MODE:-}" = unshare ] \
      || die "mmdebstrap needs root (or MMDEBSTRAP_MODE=unshare)"
    command -v mmdebstrap >/dev/null || die "mmdebstrap missing: run scripts/setup.sh (apt-get install mmdebstrap)"
    step "[2/5] base rootfs: mmdebstrap bookworm minbase + $(sed 's/#.*//' images/base/packages.txt | xargs) ..."
    run mmdebstrap scripts/images/mkrootfs.sh "$base_tar" images/base/packages.txt
    # keep only the current tarball
    find "$cache" -maxdepth 1 -name 'debian-base-bookworm-*.tar' ! -name "$(basename "$base_tar")" -delete
    step "      $(du -h "$base_tar" | cut -f1) tarball in $(elapsed "$t0")"
  fi
  if docker image inspect "$base_keyed" >/dev/null 2>&1; then
    step "[3/5] base image: $base_keyed already imported"
  else
    step "[3/5] base image: docker import -> $base_keyed"
    run import docker import \
      --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'ENV LANG=C.UTF-8' \
      --change 'CMD ["/bin/bash"]' \
      --change "LABEL org.sidecar-bundle.base-key=$base_key" \
      --change 'LABEL org.opencontainers.image.title=sidecar-bundle-debian-base' \
      --change 'LABEL org.opencontainers.image.description="Debian bookworm minbase + bash ca-certificates curl git jq python3 (mmdebstrap, slimmed)"' \
      --message "mmdebstrap bookworm minbase, key $base_key" \
      "$base_tar" "$base_keyed"
  fi
  docker tag "$base_keyed" "$base_image"
}

# The demo/test agent: the base plus bottle-mcp and demo-upstream (images/agent-test/).
build_agent_test() {
  local t0; t0=$(date +%s.%N)
  step "      $repo/agent-test:$tag from images/agent-test/Dockerfile"
  run build-agent-test docker build -f images/agent-test/Dockerfile -t "$repo/agent-test:$tag" \
    --build-arg "BASE_IMAGE=$base_keyed" .
  step "      done in $(elapsed "$t0")"
}

# ---- 4+5. the two images -------------------------------------------------------------------------
version=$(sed -n 's/^version *= *"\(.*\)"/\1/p' Cargo.toml | head -1)
revision=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
build_image() { # n dockerfile image
  local n=$1 dockerfile=$2 image=$3 t0; t0=$(date +%s.%N)
  step "[$n/5] $image:$tag from $dockerfile"
  run "build-${image##*/}" docker build -f "$dockerfile" -t "$image:$tag" \
    --build-arg "BUILDER_IMAGE=$base_keyed" --build-arg "BASE_IMAGE=$base_keyed" \
    --build-arg "VERSION=$version" --build-arg "REVISION=$revision" .
  step "      done in $(elapsed "$t0")"
}

case "$only" in
  base) build_base; build_agent_test ;;
  sidecars) build_binaries; build_base; build_image 4 Dockerfile.sidecars "$repo/sidecars" ;;
  control-plane) build_binaries; build_base; build_image 5 Dockerfile.control-plane "$repo/control-plane" ;;
  all)
    build_binaries; build_base; build_agent_test
    build_image 4 Dockerfile.sidecars "$repo/sidecars"
    build_image 5 Dockerfile.control-plane "$repo/control-plane"
    ;;
esac

# Untagged leftovers would pile up: images whose tag moved to a rebuild, and the legacy builder's
# untagged build stages (kept for an hour: they are the cache of the next run's build stage).
docker image prune -f --filter "label=org.opencontainers.image.source=https://github.com/sidecar-bundle/sidecar-bundle" >/dev/null 2>&1 || true
docker image prune -f --filter "label=org.sidecar-bundle.stage=build" --filter "until=1h" >/dev/null 2>&1 || true

mb() { docker image inspect -f '{{.Size}}' "$1" 2>/dev/null | awk '{printf "%.1f MB", $1/1000000}'; }
step "sizes:"
for img in "$base_image" "$repo/agent-test:$tag" "$repo/sidecars:$tag" "$repo/control-plane:$tag"; do
  docker image inspect "$img" >/dev/null 2>&1 && printf '  %-40s %s\n' "$img" "$(mb "$img")"
done
step "done in $(elapsed "$t_start")"
