"""A smart-HTTP git upstream that demands Basic auth: `git http-backend` behind a tiny
HTTP server. Used by tests/git_gate.rs to prove git-gate talks to an HTTP upstream with the
repo's credential (which the agent never has).

usage: git_http_upstream.py ROOT USER:PASSWORD PORT_FILE LOG_FILE
With GIT_UPSTREAM_TLS=CERT:KEY (PEM files) it serves HTTPS. Writes its port to PORT_FILE once listening; appends one line per request to LOG_FILE:
`<status> <method> <path>`.
"""
import base64
import http.server
import os
import subprocess
import sys

root, userpass, port_file, log_file = sys.argv[1:5]
want = "Basic " + base64.b64encode(userpass.encode()).decode()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def record(self, status):
        with open(log_file, "a") as f:
            f.write(f"{status} {self.command} {self.path}\n")

    def do_GET(self):
        self.git()

    def do_POST(self):
        self.git()

    def body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = b""
            while True:
                size = int(self.rfile.readline().strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def git(self):
        body = self.body()
        if self.headers.get("Authorization", "") != want:
            self.record(401)
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="git"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        path, _, query = self.path.partition("?")
        env = dict(
            os.environ,
            GIT_PROJECT_ROOT=root,
            GIT_HTTP_EXPORT_ALL="1",
            PATH_INFO=path,
            QUERY_STRING=query,
            REQUEST_METHOD=self.command,
            CONTENT_TYPE=self.headers.get("Content-Type", ""),
            CONTENT_LENGTH=str(len(body)),
            REMOTE_USER=userpass.split(":")[0],
            REMOTE_ADDR="127.0.0.1",
            HTTP_CONTENT_ENCODING=self.headers.get("Content-Encoding", ""),
            HTTP_GIT_PROTOCOL=self.headers.get("Git-Protocol", ""),
        )
        out = subprocess.run(["git", "http-backend"], input=body, env=env,
                             capture_output=True).stdout
        head, _, payload = out.partition(b"\r\n\r\n")
        status, headers = 200, []
        for line in head.split(b"\r\n"):
            key, _, value = line.decode().partition(":")
            if key.lower() == "status":
                status = int(value.strip().split()[0])
            elif key:
                headers.append((key, value.strip()))
        self.record(status)
        self.send_response(status)
        for key, value in headers:
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
if os.environ.get("GIT_UPSTREAM_TLS"):
    import ssl
    cert, key = os.environ["GIT_UPSTREAM_TLS"].split(":", 1)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
with open(port_file + ".tmp", "w") as f:
    f.write(str(server.server_address[1]))
os.rename(port_file + ".tmp", port_file)
server.serve_forever()
