#!/usr/bin/env bash
# cmd.wordcount: {"text": "..."} -> {"lines", "words", "characters"} like `wc -lwm`, but JSON.
# lines = newline-separated lines (a trailing newline does not start a new line), words =
# whitespace-separated words, characters = Unicode code points. jq exits non-zero (message on
# stderr) when the input has no string "text".
set -euo pipefail
exec jq -c 'if (.text | type) != "string" then error("input.text must be a string") else .text end
  | {lines: (if . == "" then 0 else (rtrimstr("\n") | split("\n") | length) end),
     words: ([splits("\\s+")] | map(select(. != "")) | length),
     characters: length}'
