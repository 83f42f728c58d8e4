"""Fetches each URL of its input with curl and with Python's urllib, through the proxy
variables of the jail (nothing here names the proxy). Input: {"urls": [url, ...]}.
Output: {"<client> <url>": {"status": int, "body": str} | {"error": str}}."""
import json
import subprocess
import sys
import urllib.error
import urllib.request

req = json.load(sys.stdin)
out = {}
for url in req.get("urls", []):
    try:
        with urllib.request.urlopen(url, timeout=20) as r:
            out["urllib " + url] = {"status": r.status, "body": r.read().decode()[:200]}
    except urllib.error.HTTPError as e:
        out["urllib " + url] = {"status": e.code, "body": e.read().decode()[:200]}
    except Exception as e:  # noqa: BLE001 - reported to the test
        out["urllib " + url] = {"error": repr(e)[:200]}
    p = subprocess.run(
        ["curl", "-sS", "--max-time", "20", "-o", "-", "-w", "\n%{http_code}", url],
        capture_output=True, text=True,
    )
    body, _, code = p.stdout.rpartition("\n")
    out["curl " + url] = {"status": int(code or 0), "body": body[:200], "stderr": p.stderr[:200]}
print(json.dumps(out))
