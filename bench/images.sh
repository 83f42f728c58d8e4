#!/usr/bin/env bash
# Image sizes vs the goals in REFERENCES.md ("Numbers to beat"); writes the `images` section of
# bench/RESULTS.md. Builds the images first if they are missing (scripts/images.sh, cached).
#
# usage: bench/images.sh          env: IMAGE_TAG (dev), IMAGE_REPO (sidecar-bundle)
set -euo pipefail
cd "$(dirname "$0")/.."

tag=${IMAGE_TAG:-dev}
repo=${IMAGE_REPO:-sidecar-bundle}
images=("$repo/sidecars:$tag" "$repo/control-plane:$tag" "$repo/debian-base:bookworm")

for img in "${images[@]}"; do
  if ! docker image inspect "$img" >/dev/null 2>&1; then
    echo "bench/images: $img missing, running scripts/images.sh" >&2
    bash scripts/images.sh >&2
    break
  fi
done

size() { docker image inspect -f '{{.Size}}' "$1"; }
mb() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1000000 }'; }
row() { # image goal_mb|- reference
  local img=$1 goal=$2 ref=$3 bytes verdict goal_txt
  bytes=$(size "$img")
  if [ "$goal" = "-" ]; then verdict="—"; goal_txt="—"
  else
    goal_txt="≤ $goal MB"
    if awk -v b="$bytes" -v g="$goal" 'BEGIN { exit !(b <= g * 1000000) }'; then verdict="yes"; else verdict="**no**"; fi
  fi
  printf '| `%s` | %s MB | %s | %s | %s |\n' "$img" "$(mb "$bytes")" "$goal_txt" "$verdict" "$ref"
}
bin_kb() { docker run --rm --entrypoint /bin/sh "$repo/sidecars:$tag" -c "wc -c < $1" 2>/dev/null | awk '{ printf "%.0f KB", $1 / 1000 }'; }

{
  echo "### Image sizes"
  echo
  echo "Uncompressed size as \`docker image inspect\` reports it (MB = 10^6 bytes), measured $(date -u +%Y-%m-%d) on Docker $(docker version -f '{{.Server.Version}}' 2>/dev/null) (legacy builder, $(docker info -f '{{.Driver}}' 2>/dev/null))."
  echo
  echo "| image | size | goal | within goal | reference |"
  echo "| --- | --- | --- | --- | --- |"
  row "$repo/sidecars:$tag" 150 "helmdeck browser sidecar ~2 GB"
  row "$repo/control-plane:$tag" 20 "helmdeck control plane < 30 MB"
  row "$repo/debian-base:bookworm" - "base of sidecars (and the test agent): bookworm minbase + git bash jq curl python3, slimmed"
  echo
  echo "Binaries inside: \`/sidecar-init\` $(bin_kb /sidecar-init), \`/usr/local/bin/sidecars\` $(bin_kb /usr/local/bin/sidecars) (static musl)."
} | tee /dev/stderr | python3 bench/update_results.py images
