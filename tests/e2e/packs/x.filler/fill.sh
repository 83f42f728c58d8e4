#!/bin/bash
# Writes 16 MiB files into $TMPDIR and /tmp until a write fails; reports how far it got.
n=0
while [ $n -lt 256 ]; do
  head -c 16777216 /dev/zero > "$TMPDIR/f$n" 2>/dev/null || break
  head -c 16777216 /dev/zero > "/tmp/filler-$n-$$" 2>/dev/null || break
  n=$((n + 1))
done
echo "{\"files\": $n}"
