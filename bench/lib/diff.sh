# Sourced by bench/git-gate.sh and bench/scanner.sh: `make_diff DIR OUT` builds a git repository
# in DIR from the Rust sources of the cargo registry (~160 MB of real code over many commits;
# random base64 text where there is no registry) and writes the patch of every commit, as
# git-gate's pre-receive scan reads it (`git diff-tree -p --cc`), to OUT. Prints the seconds
# `git diff-tree` took.
make_diff() {
  local dir=$1 out=$2 src=${CARGO_HOME:-$HOME/.cargo}/registry/src n=0 s e
  git init -q --initial-branch=main "$dir"
  if [ -d "$src" ]; then
    while IFS= read -r -d '' d; do
      cp -r "$d" "$dir/" 2>/dev/null || true
      n=$((n+1))
      if [ $((n % 40)) = 0 ]; then git -C "$dir" add -A >/dev/null 2>&1; git -C "$dir" commit -q -m "batch $n" || true; fi
      [ "$(du -sm "$dir" | cut -f1)" -ge 160 ] && break
    done < <(find "$src"/*/ -mindepth 1 -maxdepth 1 -type d -print0 | sort -z)
    git -C "$dir" add -A >/dev/null 2>&1; git -C "$dir" commit -q -m "last" || true
  else
    for i in $(seq 1 40); do head -c 2000000 /dev/urandom | base64 -w 100 > "$dir/f$i.txt"; git -C "$dir" add -A; git -C "$dir" commit -q -m "c$i"; done
  fi
  s=$(date +%s.%N)
  git -C "$dir" rev-list --all | git -C "$dir" diff-tree --stdin -r -p --cc --root --no-color --no-ext-diff --no-textconv --no-renames > "$out"
  e=$(date +%s.%N)
  echo "$e - $s" | bc -l
}
