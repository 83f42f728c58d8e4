#!/usr/bin/env python3
"""Replace one section of bench/RESULTS.md with the markdown read from stdin.

Each benchmark owns a section delimited by `<!-- BEGIN name -->` / `<!-- END name -->`, so the
benchmarks can run independently and still share one results page.

usage: some-bench | tee /dev/stderr | bench/update_results.py NAME
"""
import pathlib
import re
import sys

name = sys.argv[1]
body = sys.stdin.read().strip()
path = pathlib.Path(__file__).with_name("RESULTS.md")
text = path.read_text() if path.exists() else "# Benchmark results\n\nWritten by the scripts under `bench/`; each section is replaced when its benchmark runs.\n"
begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
section = f"{begin}\n{body}\n{end}"
pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
if pattern.search(text):
    text = pattern.sub(lambda _: section, text)
else:
    text = text.rstrip() + "\n\n" + section + "\n"
path.write_text(text)
