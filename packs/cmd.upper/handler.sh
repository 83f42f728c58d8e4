#!/usr/bin/env bash
# cmd.upper: {"text": "..."} -> {"text": "<upper-cased>"}. jq exits non-zero (message on stderr)
# when the input has no string "text".
set -euo pipefail
exec jq -c '{text: (if (.text | type) == "string" then .text | ascii_upcase else error("input.text must be a string") end)}'
