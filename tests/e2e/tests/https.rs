//! HTTPS inside a real bottle: the agent's TLS to an allowlisted host *name* is decrypted by
//! egress (the agent trusts the bottle CA through the bundle the renderer points
//! `SSL_CERT_FILE` & co. at), DLP refuses a secret in the body before anything reaches the
//! upstream, and egress verifies the upstream with the private root the manifest names in
//! `upstream_roots`. The upstream is an HTTPS server container of the test's own on the
//! bottle's egress network, with a certificate from a CA the test makes with openssl.

use e2e::{require_docker, root_credential, run, wait_until, Bottle, WorldContainer};

/// The upstream: answers every GET with `hello over tls` and every POST with
/// `got N bytes`; logs each request line to stdout (the test reads `docker logs`), with
/// whether the body arrived whole and whether it held a token prefix.
const SERVER: &str = r#"
import http.server, ssl, sys
class H(http.server.BaseHTTPRequestHandler):
    def reply(self, body):
        self.send_response(200); self.send_header("content-length", str(len(body)))
        self.end_headers(); self.wfile.write(body)
    def do_GET(self):
        print("seen", self.command, self.path, flush=True); self.reply(b"hello over tls")
    def do_POST(self):
        n = int(self.headers.get("content-length", "0")); got = self.rfile.read(n)
        # A body cut off on the way is "cut"; "token" says whether a token prefix arrived.
        print("seen" if len(got) == n else "cut", self.command, self.path,
              "token" if b"ghp_" in got else "clean", flush=True)
        self.reply(b"got %d bytes" % len(got))
s = http.server.ThreadingHTTPServer(("0.0.0.0", 8443), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); ctx.load_cert_chain("/certs/leaf.crt", "/certs/leaf.key")
s.socket = ctx.wrap_socket(s.socket, server_side=True)
s.serve_forever()
"#;

#[test]
fn https_to_a_named_host_is_decrypted_scanned_and_verified_against_the_private_root() {
    if !require_docker() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let name = "world-tls";
    let (ca, ca_key) = e2e::make_ca(dir.path(), "e2e private root");
    e2e::sign_leaf(&ca, &ca_key, &format!("DNS:{name}"), dir.path());
    let ca_pem = std::fs::read_to_string(&ca).expect("ca.crt");
    let root = root_credential(dir.path(), "world-root.pem", ca_pem.trim_end());
    let manifest = format!(
        r#"
slug = "{{slug}}"
daemons = ["egress", "pipelock"]
allow_cidrs = ["172.16.0.0/12", "192.168.0.0/16", "10.0.0.0/8"]
upstream_roots = ["WORLD_ROOT"]

[[allowlist]]
host = "{name}"
ports = [8443]

[credentials.WORLD_ROOT]
file = "{root}"

[agent]
image = "sidecar-bundle/agent-test:dev"
command = ["sleep", "infinity"]
"#,
        root = root.display()
    );
    let b = Bottle::up("https", &manifest);
    let egress_net = b.egress_network();
    let world = format!("e2e-{name}-{}", b.slug);
    let _ = run("docker", &["rm", "-f", &world]);
    run(
        "docker",
        &[
            "run",
            "-d",
            "--name",
            &world,
            "--user",
            "0:0",
            "--network",
            &egress_net,
            "--network-alias",
            name,
            "-v",
            &format!("{}:/certs:ro", dir.path().display()),
            "sidecar-bundle/agent-test:dev",
            "python3",
            "-c",
            SERVER,
        ],
    )
    .ok("start the HTTPS world");
    let _world = WorldContainer(world.clone());
    let sh = |script: &str| b.exec(&b.agent(), &["bash", "-c", script]);
    let url = format!("https://{name}:8443");
    wait_until(
        "the HTTPS world answers through the chain",
        std::time::Duration::from_secs(30),
        || sh(&format!("curl -sS --max-time 5 {url}/ok")).stdout == "hello over tls",
    );
    // The certificate the agent saw is the bottle CA's (egress decrypted), not the world's.
    let issuer = sh(&format!(
        "curl -sv --max-time 5 -o /dev/null {url}/ok 2>&1 | grep -i 'issuer:'"
    ));
    assert!(
        issuer.stdout.to_ascii_lowercase().contains("issuer")
            && !issuer.stdout.contains("e2e private root"),
        "the agent saw the upstream's own certificate: {issuer:?}"
    );
    // A benign upload passes; a token in the body is refused before the upstream sees it.
    let out = sh(&format!(
        "curl -sS --max-time 10 -d 'note=all fine here' {url}/upload"
    ));
    assert_eq!(out.stdout, "got 18 bytes", "{out:?}");
    let token = "ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789";
    let out = sh(&format!(
        "curl -sS --max-time 10 -w ' %{{http_code}}' -d 'k={token}' {url}/leak"
    ));
    assert!(
        out.stdout
            .contains("blocked: secret detected (rule github-token) in body")
            && out.stdout.ends_with(" 403"),
        "{out:?}"
    );
    // Past the first 1 MiB window the body streams through the DLP: a benign 3 MiB upload
    // arrives whole (the bottle's default `https_body_limit` is 64 MiB), and a token 2.5 MiB
    // into one stops it: 403, the upstream's request cut off without the token.
    let big = "head -c 3145728 /dev/zero | tr '\\0' 'a'";
    let out = sh(&format!(
        "{big} > /tmp/big && curl -sS --max-time 30 --data-binary @/tmp/big {url}/big-upload"
    ));
    assert_eq!(out.stdout, "got 3145728 bytes", "{out:?}");
    let out = sh(&format!(
        "{{ head -c 2621440 /tmp/big; printf '\\n{token}\\n'; head -c 524288 /tmp/big; }} > /tmp/leak \
         && curl -sS --max-time 30 -w ' %{{http_code}}' --data-binary @/tmp/leak {url}/big-leak"
    ));
    assert!(
        out.stdout
            .contains("blocked: secret detected (rule github-token) in body")
            && out.stdout.ends_with(" 403"),
        "{out:?}"
    );
    let seen = run("docker", &["logs", &world]);
    assert!(
        seen.stdout.contains("seen POST /big-upload clean"),
        "{seen:?}"
    );
    assert!(
        !seen.stdout.contains("seen POST /big-leak") && !seen.stdout.contains("/big-leak token"),
        "the streamed body reached the upstream whole or with the token: {seen:?}"
    );
    assert!(seen.stdout.contains("seen POST /upload"), "{seen:?}");
    assert!(
        !seen.stdout.contains("/leak"),
        "the refused request reached the upstream: {seen:?}"
    );
    let logs = run("docker", &["logs", &b.sidecars()]);
    assert!(
        !format!("{}{}", logs.stdout, logs.stderr).contains(token),
        "a log line holds the token"
    );
}
