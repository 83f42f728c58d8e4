"""A hostile pack handler: tries every way out of its room and reports each attempt.

Input (JSON on stdin): {"read": [paths], "write": [paths], "list": [dirs],
"daemon_uids": [uids], "pids": [[pid, uid]], "tcp": [[host, port]], "udp_dns": [[host, port]],
"unix": [paths], "abstract": [names], "raw": bool, "netlink": bool}.
Output: {"results": {attempt: "blocked: <why>" | "LEAKED: <what>"}, "uid": <uid>}.
Never raises: every attempt is recorded, so the test sees them all at once.
"""
import json
import os
import signal
import socket
import struct
import sys

req = json.load(sys.stdin)
results = {}


def attempt(name, fn):
    try:
        got = fn()
        results[name] = "LEAKED: " + repr(got)[:60]
    except Exception as e:  # noqa: BLE001 - every failure is the wall holding
        results[name] = "blocked: " + type(e).__name__ + " " + str(e)[:60]


def read(path):
    with open(path, "rb") as f:
        return len(f.read())


def write(path):
    with open(path, "ab") as f:
        f.write(b"#forged by a hostile pack\n")
    return "wrote"


def listdir(path):
    return os.listdir(path)


for p in req.get("read", []):
    attempt("read " + p, lambda p=p: read(p))
for p in req.get("write", []):
    attempt("write " + p, lambda p=p: write(p))
for d in req.get("list", []):
    attempt("list " + d, lambda d=d: listdir(d))

# Every process of another room: signal it (0 = permission check only), read its environ and
# its memory (ptrace access).
uids = set(req.get("daemon_uids", []))
targets = [(str(p), u) for p, u in req.get("pids", [])]
try:
    for pid in [p for p in os.listdir("/proc") if p.isdigit()]:
        try:
            with open("/proc/%s/status" % pid) as f:
                status = f.read()
            uid = int([l for l in status.splitlines() if l.startswith("Uid:")][0].split()[1])
        except Exception:  # noqa: BLE001 - the process is gone
            continue
        if (uid in uids or pid == "1") and (pid, uid) not in targets:
            targets.append((pid, uid))
except Exception as e:  # noqa: BLE001 - the process table itself is hidden
    results["list /proc"] = "blocked: " + type(e).__name__ + " " + str(e)[:60]
for pid, uid in targets:
    name = "pid %s uid %d" % (pid, uid)
    attempt("signal " + name, lambda pid=pid: os.kill(int(pid), 0) or "signal allowed")
    attempt("environ " + name, lambda pid=pid: read("/proc/%s/environ" % pid))
    attempt("mem " + name, lambda pid=pid: read("/proc/%s/mem" % pid))
    attempt("cwd " + name, lambda pid=pid: os.listdir("/proc/%s/cwd" % pid))


def tcp(host, port):
    s = socket.create_connection((host, port), timeout=3)
    s.close()
    return "connected"


def udp_dns(host, port):
    q = struct.pack(">HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0)
    for label in b"exfil-probe.example.com".split(b"."):
        q += bytes([len(label)]) + label
    q += b"\x00\x00\x01\x00\x01"
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(3)
    s.sendto(q, (host, port))
    data, _ = s.recvfrom(512)
    return "answered %d bytes" % len(data)


def unix(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(3)
    s.connect(path)
    s.close()
    return "connected"


for host, port in req.get("tcp", []):
    attempt("tcp %s:%d" % (host, port), lambda h=host, p=port: tcp(h, p))
for host, port in req.get("udp_dns", []):
    attempt("udp-dns %s:%d" % (host, port), lambda h=host, p=port: udp_dns(h, p))
for p in req.get("unix", []):
    attempt("unix " + p, lambda p=p: unix(p))


def abstract(name):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(3)
    s.connect("\0" + name)
    s.close()
    return "connected"


for n in req.get("abstract", []):
    attempt("abstract unix @" + n, lambda n=n: abstract(n))
if req.get("raw"):
    attempt("raw socket", lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) and "opened")
    attempt("packet socket", lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW) and "opened")
if req.get("netlink"):
    def netlink():
        s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)
        s.bind((0, 0))
        return "opened"
    attempt("netlink socket", netlink)

print(json.dumps({"uid": os.getuid(), "results": results}))
