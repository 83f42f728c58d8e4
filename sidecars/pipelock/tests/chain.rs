//! The proxy chain end to end over real TCP: agent client → pipelock → egress → upstream, with
//! curl, Python `requests` and raw sockets as the agent.

mod support;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const LOOPBACK: &str = "127.0.0.0/8";

/// A chain whose upstreams live on loopback: both hops exempt 127/8 from the SSRF guard.
async fn chain(allow: Value, egress_extra: Value) -> (Daemon, Daemon) {
    let mut e =
        json!({"listen": "127.0.0.1:0", "allow_from": ["127.0.0.1/32"], "allow_cidrs": [LOOPBACK]});
    if let (Some(e), Some(extra)) = (e.as_object_mut(), egress_extra.as_object()) {
        for (k, v) in extra {
            e.insert(k.clone(), v.clone());
        }
    }
    let egress = start_egress(e).await;
    let pipelock = start_pipelock(json!({
        "upstream": egress.addr.to_string(),
        "allow": allow,
        "allow_cidrs": [LOOPBACK, "::1/128"],
    }))
    .await;
    (pipelock, egress)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_hosts_are_reached_through_the_chain_with_curl_and_python() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "upstream-ca");
    let tls_up = upstream(Some(ca.ca.server_config("127.0.0.1").unwrap())).await;
    let plain_up = upstream(None).await;
    let (pipelock, _egress) = chain(
        json!([{"host": "127.0.0.1", "ports": [tls_up.port(), plain_up.port()]}]),
        json!({}),
    )
    .await;
    let ca_file = ca.cert_path.to_str().unwrap();

    // HTTPS via CONNECT, curl.
    let out = curl(&[
        "--proxy",
        &pipelock.url(),
        "--cacert",
        ca_file,
        &format!("https://127.0.0.1:{}/echo", tls_up.port()),
    ])
    .await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let v: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["path"], "/echo");
    // Plain HTTP, absolute-form, curl (keep-alive: two URLs on one connection).
    let url = format!("http://127.0.0.1:{}/plain", plain_up.port());
    let out = curl(&["--proxy", &pipelock.url(), &url, &url]).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stdout.matches("\"path\":\"/plain\"").count(), 2, "{stdout}");
    // The proxy markers never reach the upstream.
    assert!(!plain_up.last_headers().contains_key("x-pipelock-addr"));
    assert!(!plain_up.last_headers().contains_key("proxy-connection"));

    // Python requests with HTTPS_PROXY / HTTP_PROXY from the environment.
    let script = format!(
        "import requests\n\
         r = requests.get('https://127.0.0.1:{}/py', timeout=20); r.raise_for_status(); print(r.json()['path'])\n\
         s = requests.Session()\n\
         for _ in range(3):\n    r = s.get('http://127.0.0.1:{}/py-plain', timeout=20); r.raise_for_status(); print(r.json()['path'])\n",
        tls_up.port(),
        plain_up.port()
    );
    let out = python(
        &script,
        &[
            ("HTTPS_PROXY", pipelock.url()),
            ("HTTP_PROXY", pipelock.url()),
            ("REQUESTS_CA_BUNDLE", ca_file.to_string()),
        ],
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stdout, "/py\n/py-plain\n/py-plain\n/py-plain\n");

    // Health on the proxy port.
    let r = raw(pipelock.addr, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(r.status, 200);
    assert!(r.body.contains("\"status\":\"ok\""), "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_not_on_the_allowlist_get_403_with_the_reason() {
    let (pipelock, _egress) = chain(
        json!([{"host": "*.example.com"}, {"host": "ok.test", "ports": [443]}]),
        json!({}),
    )
    .await;
    let r = connect(pipelock.addr, "evil.example:443").await;
    assert_eq!(r.status, 403);
    assert_eq!(r.reason, "blocked: host not on allowlist: evil.example");
    let body: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(
        body["message"],
        "blocked: host not on allowlist: evil.example"
    );
    assert_eq!(body["error"], "blocked");
    // `*.example.com` does not cover the apex; ports are checked.
    assert_eq!(connect(pipelock.addr, "example.com:443").await.status, 403);
    let r = connect(pipelock.addr, "ok.test:80").await;
    assert_eq!(
        (r.status, r.reason.as_str()),
        (403, "blocked: port 80 not allowed for ok.test")
    );
    // Plain HTTP, and what real clients show.
    let out = curl(&["--proxy", &pipelock.url(), "http://evil.example/x"]).await;
    assert!(text(&out)
        .0
        .contains("blocked: host not on allowlist: evil.example"));
    let out = curl(&["--proxy", &pipelock.url(), "https://evil.example/"]).await;
    assert!(!out.status.success());
    assert!(text(&out).1.contains("403"), "{}", text(&out).1);
    let out = python(
        "import requests\ntry:\n    requests.get('https://evil.example/', timeout=10)\nexcept Exception as e:\n    print(e)\n",
        &[("HTTPS_PROXY", pipelock.url())],
    )
    .await;
    assert!(
        text(&out)
            .0
            .contains("403 blocked: host not on allowlist: evil.example"),
        "{:?}",
        text(&out)
    );
}

/// Spellings of non-public addresses. None may be reached even with `allow: *`.
const SSRF_CATALOGUE: &[&str] = &[
    "127.0.0.1",
    "0x7f.1",
    "2130706433",
    "017700000001",
    "127.1",
    "0177.0.0.1",
    "0x7f000001",
    "127.0.1",
    "127.0.0.1.",
    "127.255.255.254",
    "[::1]",
    "[::ffff:127.0.0.1]",
    "[::ffff:7f00:1]",
    "[::127.0.0.1]",
    "[64:ff9b::7f00:1]",
    "[64:ff9b:1::a00:1]",
    "169.254.169.254",
    "0xa9fea9fe",
    "[::ffff:a9fe:a9fe]",
    "[fd00:ec2::254]",
    "0.0.0.0",
    "0",
    "0x0",
    "10.0.0.1",
    "012.0.0.1",
    "172.16.0.1",
    "172.31.255.255",
    "192.168.1.1",
    "3232235777",
    "100.64.0.1",
    "198.18.0.1",
    "224.0.0.1",
    "239.255.255.250",
    "255.255.255.255",
    "240.0.0.1",
    "[fe80::1]",
    "[fc00::1]",
    "[fd12:3456::1]",
    "[::]",
    "[ff02::1]",
    "[2002:7f00:1::]",
    "[2001::1]",
    "1.2.3.4.5",
    "256.0.0.1",
    "localhost",
    "LOCALHOST.",
    "localhost.",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssrf_catalogue_is_denied_even_when_allowlisted() {
    // The next hop is a sink that counts connections: nothing may get that far.
    let (sink_addr, reached) = sink().await;
    let pipelock = start_pipelock(json!({
        "upstream": sink_addr.to_string(),
        "allow": [{"host": "*", "ports": [443, 80]}],
    }))
    .await;
    assert!(SSRF_CATALOGUE.len() >= 25);
    for host in SSRF_CATALOGUE {
        let r = connect(pipelock.addr, &format!("{host}:443")).await;
        assert_eq!(r.status, 403, "CONNECT {host}: {} {}", r.status, r.body);
        assert!(
            r.reason.starts_with("blocked: SSRF: "),
            "CONNECT {host}: {}",
            r.reason
        );
        let r = raw(
            pipelock.addr,
            &format!("GET http://{host}/x HTTP/1.1\r\nHost: {host}\r\n\r\n"),
        )
        .await;
        assert_eq!(r.status, 403, "GET {host}: {} {}", r.status, r.body);
        assert!(
            r.reason.starts_with("blocked: SSRF: "),
            "GET {host}: {}",
            r.reason
        );
    }
    let r = connect(pipelock.addr, "0x7f.1:443").await;
    assert_eq!(r.reason, "blocked: SSRF: 0x7f.1 (127.0.0.1) is loopback");
    let r = connect(pipelock.addr, "127.0.0.1:443").await;
    assert_eq!(r.reason, "blocked: SSRF: 127.0.0.1 is loopback");
    let r = connect(pipelock.addr, "169.254.169.254:80").await;
    assert_eq!(
        r.reason,
        "blocked: SSRF: 169.254.169.254 is the cloud metadata address"
    );
    let r = connect(pipelock.addr, "localhost:443").await;
    assert!(
        r.reason
            .starts_with("blocked: SSRF: localhost resolves to "),
        "{}",
        r.reason
    );
    // And with curl, as an agent would.
    let out = curl(&["--proxy", &pipelock.url(), "http://2130706433/"]).await;
    assert!(text(&out).0.contains("is loopback"), "{:?}", text(&out));
    assert_eq!(
        reached.load(Ordering::SeqCst),
        0,
        "a forbidden address reached the next hop"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_is_denied_without_the_explicit_exception() {
    let up = upstream(None).await;
    let target = format!("http://127.0.0.1:{}/x", up.port());
    let allow = json!([{"host": "127.0.0.1", "ports": [up.port()]}]);
    let strict = start_pipelock(json!({"upstream": null, "allow": allow})).await;
    let out = curl(&["--proxy", &strict.url(), &target]).await;
    assert!(
        text(&out)
            .0
            .contains("blocked: SSRF: 127.0.0.1 is loopback"),
        "{:?}",
        text(&out)
    );
    let open =
        start_pipelock(json!({"upstream": null, "allow": allow, "allow_cidrs": [LOOPBACK]})).await;
    let out = curl(&["--proxy", &open.url(), &target]).await;
    assert!(text(&out).0.contains("\"path\":\"/x\""), "{:?}", text(&out));
    assert_eq!(up.requests(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn egress_checks_the_address_again() {
    let up = upstream(None).await;
    // pipelock exempts loopback, egress does not: the second hop must still refuse.
    let egress = start_egress(json!({"allow_from": ["127.0.0.1/32"]})).await;
    let pipelock = start_pipelock(json!({
        "upstream": egress.addr.to_string(),
        "allow": [{"host": "*", "ports": [up.port()]}],
        "allow_cidrs": [LOOPBACK, "::1/128"],
    }))
    .await;
    for host in ["127.0.0.1", "localhost", "0x7f.1"] {
        let r = connect(pipelock.addr, &format!("{host}:{}", up.port())).await;
        assert_eq!(r.status, 403, "{host}");
        assert_eq!(r.reason, "blocked: SSRF: 127.0.0.1 is loopback", "{host}");
        let r = raw(
            pipelock.addr,
            &format!(
                "GET http://{host}:{}/ HTTP/1.1\r\nHost: x\r\n\r\n",
                up.port()
            ),
        )
        .await;
        assert_eq!(r.status, 403, "{host}: {}", r.body);
    }
    // Straight to egress: with its own resolution, and with a forged checked address.
    let port = up.port();
    let r = connect(egress.addr, &format!("localhost:{port}")).await;
    assert!(
        r.reason.starts_with("blocked: SSRF: localhost resolves to"),
        "{}",
        r.reason
    );
    for forged in [
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
        format!("[::ffff:127.0.0.1]:{port}"),
        format!("0.0.0.0:{port}"),
    ] {
        let r = raw(egress.addr, &format!("CONNECT example.com:{port} HTTP/1.1\r\nHost: example.com\r\nX-Pipelock-Addr: {forged}\r\n\r\n")).await;
        assert_eq!(r.status, 403, "{forged}");
        assert!(r.reason.starts_with("blocked: SSRF: "), "{}", r.reason);
    }
    let r = raw(egress.addr, &format!("CONNECT example.com:{port} HTTP/1.1\r\nHost: e\r\nX-Pipelock-Addr: 127.0.0.1:1\r\n\r\n")).await;
    assert_eq!(r.status, 403);
    assert_eq!(up.requests(), 0);
}

async fn send_request(proxy: std::net::SocketAddr, host: &str, row: &Value) -> u16 {
    let mut req = format!(
        "{} http://{host}{} HTTP/1.1\r\nHost: {host}\r\n",
        row["method"].as_str().unwrap(),
        row["path"].as_str().unwrap()
    );
    for (k, v) in row["headers"].as_object().unwrap() {
        req.push_str(&format!("{k}: {}\r\n", v.as_str().unwrap()));
    }
    let body = row["body"].as_str().unwrap_or("");
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    raw(proxy, &req).await.status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlp_refuses_secrets_and_passes_the_benign_corpus() {
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("agent.env");
    std::fs::write(
        &secret_file,
        "# the agent's env\nDB_PASSWORD=correct-horse-battery-staple\n",
    )
    .unwrap();
    let up = upstream(None).await;
    let host = format!("127.0.0.1:{}", up.port());
    let pipelock = start_pipelock(json!({
        "upstream": null,
        "allow": [{"host": "127.0.0.1", "ports": [up.port()]}],
        "allow_cidrs": [LOOPBACK],
        "secret_files": [secret_file],
        "rate_limit_per_minute": 0,
    }))
    .await;
    let get = |target: &str, extra: &str, body: &str| {
        format!("POST http://{host}{target} HTTP/1.1\r\nHost: {host}\r\n{extra}Content-Length: {}\r\n\r\n{body}", body.len())
    };
    let b64 = |s: &str| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(s)
    };
    let cases = [
        (get("/x?key=AKIAIOSFODNN7EXAMPLE", "", ""), "aws-access-key", "query"),
        (get("/repos/ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789/x", "", ""), "github-token", "path"),
        (get("/x", "X-Token: glpat-abcdefghij0123456789\r\n", ""), "gitlab-token", "header x-token"),
        (get("/x", "Authorization: Basic eC1hY2Nlc3MtdG9rZW46Z2hwX2FCY0RlRmdIaUprTG1Ob1BxUnNUdVZ3WHlaMDEyMzQ1Njc4OQ==\r\n", ""), "github-token", "header authorization"),
        (get("/x", "", "{\"note\": \"-----BEGIN OPENSSH PRIVATE KEY-----\\nb3Blbn\"}"), "private-key", "body"),
        (get("/x", "", "payload=xoxb-1234567890-abcdefghijkl"), "slack-token", "body"),
        (get("/x", "", "{\"jwt\":\"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U\"}"), "jwt", "body"),
        (get("/x?client_secret=Zx81kQp2Lm7Vn4Rt9Ws3Yb6", "", ""), "generic-secret", "query"),
        (get("/x?q=%41KIAIOSFODNN7EXAMPLE", "", ""), "aws-access-key", "query"),
        (get("/x?p=correct-horse-battery-staple", "", ""), "configured-secret", "query"),
        (get("/x", "", &b64("the password is correct-horse-battery-staple!")), "configured-secret-base64", "body"),
        (get(&format!("/x/{}", hex::encode("correct-horse-battery-staple")), "", ""), "configured-secret-hex", "path"),
        (get("/x", "Cookie: s=correct%2Dhorse%2Dbattery%2Dstaple\r\n", ""), "configured-secret", "header cookie"),
    ];
    for (req, rule, location) in &cases {
        let r = raw(pipelock.addr, req).await;
        assert_eq!(r.status, 403, "{rule}: {}", r.body);
        assert_eq!(
            r.reason,
            format!("blocked: secret detected (rule {rule}) in {location}")
        );
        // The answer never repeats the secret.
        assert!(
            !r.body.contains("AKIA") && !r.body.contains("correct-horse"),
            "{}",
            r.body
        );
    }
    assert_eq!(
        up.requests(),
        0,
        "a request carrying a secret reached the upstream"
    );

    // Bodies over the scan bound are refused, never forwarded unscanned.
    let big = "a".repeat(2 << 20);
    let r = raw(pipelock.addr, &get("/x", "", &big)).await;
    assert_eq!(r.status, 413);

    let corpus = include_str!("fixtures/benign.jsonl");
    let mut false_positives = Vec::new();
    let mut total = 0;
    for line in corpus.lines() {
        let row: Value = serde_json::from_str(line).unwrap();
        total += 1;
        let status = send_request(pipelock.addr, &host, &row).await;
        if status != 200 {
            false_positives.push((status, row["path"].to_string()));
        }
    }
    println!(
        "benign corpus: {total} requests, {} false positives",
        false_positives.len()
    );
    assert!(total >= 300);
    assert!(
        false_positives.is_empty(),
        "false positives: {false_positives:#?}"
    );
    assert_eq!(up.requests(), total);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_are_injected_and_never_reach_the_agent() {
    let dir = tempfile::tempdir().unwrap();
    let upstream_ca = TestCa::new(dir.path(), "upstream-ca");
    let bottle_ca = TestCa::new(dir.path(), "bottle-ca");
    let creds = dir.path().join("creds");
    std::fs::create_dir(&creds).unwrap();
    let token = "gh-token-Qm9vb2JhcjEyMzQ1Njc4OTA";
    std::fs::write(creds.join("github"), format!("{token}\n")).unwrap();
    let vault_value = "vault-value-7f3a9c1e55d2";
    std::fs::write(dir.path().join("vault-x"), vault_value).unwrap();
    std::fs::write(dir.path().join("vault-y"), "other-host-secret-value").unwrap();
    let tls_up = upstream(Some(upstream_ca.ca.server_config("localhost").unwrap())).await;
    let plain_up = upstream(None).await;
    let (pipelock, _egress) = chain(
        json!([{"host": "localhost", "ports": [tls_up.port(), plain_up.port()]}]),
        json!({
            "routes": [{"host": "localhost", "headers": {"Authorization": "Bearer ${cred:github}"}}],
            "vault": {
                "X": {"file": dir.path().join("vault-x"), "hosts": ["localhost"]},
                "Y": {"file": dir.path().join("vault-y"), "hosts": ["other.example"]},
            },
            "credentials_dir": creds,
            "ca_cert": bottle_ca.cert_path,
            "ca_key": bottle_ca.key_path,
            "extra_roots": [upstream_ca.cert_path],
        }),
    )
    .await;
    let bottle = bottle_ca.cert_path.to_str().unwrap();
    let https = format!("https://localhost:{}/echo", tls_up.port());

    // The agent sends its own Authorization: it is replaced; the upstream echoes the real one,
    // which is redacted in both the echoed header and the body.
    let out = curl(&[
        "--proxy",
        &pipelock.url(),
        "--cacert",
        bottle,
        "-i",
        "-H",
        "Authorization: Bearer agents-own",
        "-H",
        "X-Key: k=${vault:X}",
        &https,
    ])
    .await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let seen = tls_up.last_headers();
    assert_eq!(seen.get_all("authorization").iter().count(), 1);
    assert_eq!(seen["authorization"], format!("Bearer {token}").as_str());
    assert_eq!(seen["x-key"], format!("k={vault_value}").as_str());
    assert!(
        !stdout.contains(token) && !stdout.contains(vault_value),
        "{stdout}"
    );
    assert!(
        stdout.contains("x-echo-authorization: Bearer [REDACTED]"),
        "{stdout}"
    );
    assert!(
        stdout.contains("\"authorization\":\"Bearer [REDACTED]\""),
        "{stdout}"
    );
    assert!(!stdout.contains("agents-own"), "{stdout}");

    // A placeholder for a host it is not scoped to is refused, never substituted.
    let before = tls_up.requests();
    let out = curl(&[
        "--proxy",
        &pipelock.url(),
        "--cacert",
        bottle,
        "-H",
        "X-Key: ${vault:Y}",
        &https,
    ])
    .await;
    let (stdout, _) = text(&out);
    assert!(
        stdout.contains("blocked: vault placeholder ${vault:Y} is not scoped to localhost"),
        "{stdout}"
    );
    assert!(!stdout.contains("other-host-secret-value"));
    assert_eq!(tls_up.requests(), before);

    // Python requests trusting only the bottle CA, keep-alive inside the intercepted tunnel.
    let script = format!(
        "import requests\ns = requests.Session()\nfor _ in range(3):\n    r = s.get('{https}', headers={{'Authorization': 'token mine'}}, timeout=20)\n    r.raise_for_status()\n    assert '{token}' not in r.text, r.text\n    print(r.json()['headers']['authorization'])\n"
    );
    let out = python(
        &script,
        &[
            ("HTTPS_PROXY", pipelock.url()),
            ("REQUESTS_CA_BUNDLE", bottle.to_string()),
        ],
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stdout, "Bearer [REDACTED]\n".repeat(3));
    assert_eq!(
        tls_up.last_headers()["authorization"],
        format!("Bearer {token}").as_str()
    );

    // Plain HTTP to the route host gets the same injection and redaction.
    let out = curl(&[
        "--proxy",
        &pipelock.url(),
        &format!("http://localhost:{}/p", plain_up.port()),
    ])
    .await;
    let (stdout, _) = text(&out);
    assert_eq!(
        plain_up.last_headers()["authorization"],
        format!("Bearer {token}").as_str()
    );
    assert!(
        stdout.contains("Bearer [REDACTED]") && !stdout.contains(token),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn egress_refuses_peers_not_in_allow_from() {
    let egress =
        start_egress(json!({"allow_from": ["10.9.9.9/32"], "allow_cidrs": [LOOPBACK]})).await;
    let out = curl(&["--proxy", &egress.url(), "http://127.0.0.1:9/x"]).await;
    assert!(
        text(&out)
            .0
            .contains("blocked: peer 127.0.0.1 is not allowed to use egress"),
        "{:?}",
        text(&out)
    );
    let r = connect(egress.addr, "127.0.0.1:9").await;
    assert_eq!(r.status, 403);
    let r = raw(egress.addr, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(r.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_answers_429() {
    let up = upstream(None).await;
    let pipelock = start_pipelock(json!({
        "upstream": null,
        "allow": [{"host": "127.0.0.1", "ports": [up.port()]}],
        "allow_cidrs": [LOOPBACK],
        "rate_limit_per_minute": 3,
    }))
    .await;
    let req = format!(
        "GET http://127.0.0.1:{}/ HTTP/1.1\r\nHost: x\r\n\r\n",
        up.port()
    );
    for _ in 0..3 {
        assert_eq!(raw(pipelock.addr, &req).await.status, 200);
    }
    let r = raw(pipelock.addr, &req).await;
    assert_eq!(r.status, 429);
    assert!(
        r.head.to_ascii_lowercase().contains("retry-after:"),
        "{}",
        r.head
    );
    assert_eq!(
        connect(pipelock.addr, &format!("127.0.0.1:{}", up.port()))
            .await
            .status,
        429
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnel_limit_answers_503_and_frees_slots() {
    let up = upstream(None).await;
    let target = format!("127.0.0.1:{}", up.port());
    let egress =
        start_egress(json!({"allow_from": ["127.0.0.1/32"], "allow_cidrs": [LOOPBACK]})).await;
    let pipelock = start_pipelock(json!({
        "upstream": egress.addr.to_string(),
        "allow": [{"host": "127.0.0.1", "ports": [up.port()]}],
        "allow_cidrs": [LOOPBACK],
        "max_tunnels": 2,
    }))
    .await;
    let a = connect(pipelock.addr, &target).await;
    let b = connect(pipelock.addr, &target).await;
    assert_eq!((a.status, b.status), (200, 200));
    let c = connect(pipelock.addr, &target).await;
    assert_eq!(c.status, 503);
    assert_eq!(c.reason, "too many tunnels: 2 open");
    drop(a);
    // The slot frees once the tunnel is torn down.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let d = connect(pipelock.addr, &target).await;
        if d.status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "tunnel slot never freed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_upstream_answers_502() {
    let dead = closed_port().await;
    let (pipelock, _egress) =
        chain(json!([{"host": "127.0.0.1", "ports": [dead]}]), json!({})).await;
    let r = connect(pipelock.addr, &format!("127.0.0.1:{dead}")).await;
    assert_eq!(r.status, 502, "{}", r.body);
    let r = raw(
        pipelock.addr,
        &format!("GET http://127.0.0.1:{dead}/ HTTP/1.1\r\nHost: x\r\n\r\n"),
    )
    .await;
    assert_eq!(r.status, 502, "{}", r.body);
    // Direct mode too, and egress itself gone.
    let direct = start_pipelock(json!({"upstream": null, "allow": [{"host": "127.0.0.1", "ports": [dead]}], "allow_cidrs": [LOOPBACK]})).await;
    assert_eq!(
        connect(direct.addr, &format!("127.0.0.1:{dead}"))
            .await
            .status,
        502
    );
    let no_egress = start_pipelock(json!({"upstream": format!("127.0.0.1:{}", closed_port().await), "allow": [{"host": "127.0.0.1", "ports": [dead]}], "allow_cidrs": [LOOPBACK]})).await;
    let r = connect(no_egress.addr, &format!("127.0.0.1:{dead}")).await;
    assert_eq!(r.status, 502);
    assert!(r.reason.contains("egress"), "{}", r.reason);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_tunnels_are_closed() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let pipelock = start_pipelock(json!({
        "upstream": null,
        "allow": [{"host": "127.0.0.1", "ports": [port]}],
        "allow_cidrs": [LOOPBACK],
        "tunnel_idle_timeout_secs": 1,
    }))
    .await;
    let mut r = connect(pipelock.addr, &format!("127.0.0.1:{port}")).await;
    assert_eq!(r.status, 200);
    let started = Instant::now();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(10), r.stream.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0, "tunnel should close");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gib_through_both_hops_is_intact() {
    const TOTAL: usize = 1 << 30;
    // A source that sends TOTAL pseudo-random bytes and reports their sha256.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (digest_tx, digest_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut block = vec![0u8; 1 << 20];
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut hasher = Sha256::new();
        for i in 0..TOTAL / block.len() {
            for chunk in block.chunks_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                chunk.copy_from_slice(&(x.wrapping_add(i as u64)).to_le_bytes());
            }
            hasher.update(&block);
            s.write_all(&block).await.unwrap();
        }
        s.shutdown().await.unwrap();
        let _ = digest_tx.send(hex::encode(hasher.finalize()));
    });
    let (pipelock, _egress) =
        chain(json!([{"host": "127.0.0.1", "ports": [port]}]), json!({})).await;
    let started = Instant::now();
    let r = connect(pipelock.addr, &format!("127.0.0.1:{port}")).await;
    assert_eq!(r.status, 200);
    let mut stream = r.stream;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut got = 0usize;
    tokio::time::timeout(Duration::from_secs(100), async {
        loop {
            let n = stream.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            got += n;
        }
    })
    .await
    .expect("transfer timed out");
    assert_eq!(got, TOTAL);
    assert_eq!(hex::encode(hasher.finalize()), digest_rx.await.unwrap());
    println!("1 GiB through pipelock→egress in {:?}", started.elapsed());
}

/// Both hops relay blind tunnels zero-copy: the bytes the agent sends in the same write as its
/// CONNECT head (read past the head by pipelock) must go first, and a half-close must cross
/// both hops while the other direction stays open (the upstream answers only after EOF).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_ahead_bytes_and_half_close_cross_both_hops() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        s.write_all(format!("saw {}", String::from_utf8_lossy(&got)).as_bytes())
            .await
            .unwrap();
    });
    let (pipelock, _egress) =
        chain(json!([{"host": "127.0.0.1", "ports": [port]}]), json!({})).await;
    let target = format!("127.0.0.1:{port}");
    let mut s = tokio::net::TcpStream::connect(pipelock.addr).await.unwrap();
    s.write_all(
        format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\nfirst-bytes-with-the-head;")
            .as_bytes(),
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut b).await.unwrap(), 1, "proxy closed");
        head.push(b[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    s.write_all(b"then-more").await.unwrap();
    s.shutdown().await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(STEP, s.read_to_end(&mut got))
        .await
        .expect("tunnel answered in time")
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&got),
        "saw first-bytes-with-the-head;then-more"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_rules_allow_and_deny_as_written_and_a_denied_request_never_carries_the_credential() {
    let dir = tempfile::tempdir().unwrap();
    let upstream_ca = TestCa::new(dir.path(), "upstream-ca");
    let bottle_ca = TestCa::new(dir.path(), "bottle-ca");
    let creds = dir.path().join("creds");
    std::fs::create_dir(&creds).unwrap();
    let token = "gh-token-Qm9vb2JhcjEyMzQ1Njc4OTA";
    std::fs::write(creds.join("github"), format!("{token}\n")).unwrap();
    let tls_up = upstream(Some(upstream_ca.ca.server_config("localhost").unwrap())).await;
    let plain_up = upstream(None).await;
    let (pipelock, _egress) = chain(
        json!([{"host": "localhost", "ports": [tls_up.port(), plain_up.port()]}]),
        json!({
            "routes": [{
                "host": "localhost",
                "headers": {"Authorization": "Bearer ${cred:github}"},
                "rules": [
                    {"deny": "POST /repos/*/*/pulls/*/merge"},
                    {"allow": "GET,POST /repos/acme/app/**"},
                    "read-only",
                ],
            }],
            "credentials_dir": creds,
            "ca_cert": bottle_ca.cert_path,
            "ca_key": bottle_ca.key_path,
            "extra_roots": [upstream_ca.cert_path],
        }),
    )
    .await;
    let bottle = bottle_ca.cert_path.to_str().unwrap();
    let base = format!("https://localhost:{}", tls_up.port());
    let request = |method: &'static str, path: &'static str| {
        let url = format!("{base}{path}");
        let proxy = pipelock.url();
        async move {
            let out = curl(&[
                "--proxy",
                &proxy,
                "--cacert",
                bottle,
                "-X",
                method,
                "-d",
                "{}",
                "-w",
                "\n%{http_code}",
                &url,
            ])
            .await;
            let (stdout, stderr) = text(&out);
            assert!(out.status.success(), "{method} {path}: {stderr}");
            let (body, code) = stdout.rsplit_once('\n').unwrap();
            (code.to_string(), body.to_string())
        }
    };
    for (method, path) in [
        ("GET", "/repos/acme/app/issues"),
        ("POST", "/repos/acme/app/issues"),
        ("GET", "/user"),
        ("OPTIONS", "/user"),
    ] {
        let before = tls_up.requests();
        let (code, _) = request(method, path).await;
        assert_eq!(code, "200", "{method} {path}");
        assert_eq!(tls_up.requests(), before + 1);
        assert_eq!(
            tls_up.last_headers()["authorization"],
            format!("Bearer {token}").as_str()
        );
    }
    for (method, path) in [
        ("POST", "/repos/acme/app/pulls/1/merge"),
        ("POST", "/repos/acme/app/pulls/1/%6derge"),
        ("POST", "/repos/ACME/app/pulls/1/merge"),
        ("DELETE", "/repos/acme/app"),
        ("POST", "/user/repos"),
        ("POST", "/repos/acme/app/x/../pulls/1/merge"),
    ] {
        let before = tls_up.requests();
        let (code, body) = request(method, path).await;
        assert_eq!(code, "403", "{method} {path}: {body}");
        assert!(
            body.contains(&format!("blocked: route rule: {method} ")),
            "{method} {path}: {body}"
        );
        assert_eq!(
            tls_up.requests(),
            before,
            "{method} {path} reached the upstream"
        );
    }
    let (_, body) = request("POST", "/repos/acme/app/pulls/1/merge").await;
    assert!(
        body.contains("blocked: route rule: POST /repos/acme/app/pulls/1/merge"),
        "{body}"
    );

    // One keep-alive connection: a refusal does not end it, the next allowed request passes.
    let script = format!(
        "import requests\ns = requests.Session()\nr = s.post('{base}/repos/acme/app/pulls/2/merge', timeout=20)\nprint(r.status_code)\nr = s.get('{base}/repos/acme/app', timeout=20)\nprint(r.status_code)\n"
    );
    assert_eq!(
        python_via(&script, &pipelock.url(), bottle).await,
        "403\n200\n"
    );

    // Plain HTTP to the route host follows the same rules.
    let before = plain_up.requests();
    let out = curl(&[
        "--proxy",
        &pipelock.url(),
        "-X",
        "DELETE",
        &format!("http://localhost:{}/repos/acme/app", plain_up.port()),
    ])
    .await;
    let (stdout, _) = text(&out);
    assert!(
        stdout.contains("blocked: route rule: DELETE /repos/acme/app"),
        "{stdout}"
    );
    assert_eq!(plain_up.requests(), before);
}

/// A Python client that opens `CONNECT localhost:PORT` through the proxy by hand, then speaks
/// TLS inside with `server_hostname` (None = no SNI) trusting `ca`; prints `200` or `closed`.
const TLS_IN_TUNNEL: &str = r#"
import socket, ssl, sys
proxy_port, port, sni, ca = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
s = socket.create_connection(("127.0.0.1", proxy_port), timeout=20)
s.sendall(f"CONNECT localhost:{port} HTTP/1.1\r\nHost: localhost:{port}\r\n\r\n".encode())
head = b""
while b"\r\n\r\n" not in head:
    head += s.recv(1)
assert head.startswith(b"HTTP/1.1 200"), head
ctx = ssl.create_default_context(cafile=ca)
ctx.check_hostname = False
try:
    t = ctx.wrap_socket(s, server_hostname=None if sni == "-" else sni)
    t.sendall(f"GET /x HTTP/1.1\r\nHost: localhost:{port}\r\nConnection: close\r\n\r\n".encode())
    print(t.recv(12).decode().split(" ")[1])
except (ssl.SSLError, ConnectionError, OSError):
    print("closed")
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blind_tunnel_to_a_name_carries_tls_for_that_name_only() {
    let dir = tempfile::tempdir().unwrap();
    let upstream_ca = TestCa::new(dir.path(), "upstream-ca");
    let tls_up = upstream(Some(upstream_ca.ca.server_config("localhost").unwrap())).await;
    let plain_up = upstream(None).await;
    let (pipelock, _egress) = chain(
        json!([{"host": "localhost", "ports": [tls_up.port(), plain_up.port()]}]),
        json!({}),
    )
    .await;
    let ca = upstream_ca.cert_path.to_str().unwrap().to_string();
    let tunnel = |sni: &'static str| {
        let args = [
            "-c".to_string(),
            TLS_IN_TUNNEL.to_string(),
            pipelock.addr.port().to_string(),
            tls_up.port().to_string(),
            sni.to_string(),
            ca.clone(),
        ];
        async move {
            let out = tokio::process::Command::new("python3")
                .args(&args)
                .kill_on_drop(true)
                .output()
                .await
                .unwrap();
            let (stdout, stderr) = text(&out);
            assert!(out.status.success(), "{stderr}");
            stdout.trim().to_string()
        }
    };
    // The name the tunnel was opened for (any case, trailing dot) passes, blind.
    assert_eq!(tunnel("localhost").await, "200");
    assert_eq!(tunnel("LocalHost.").await, "200");
    let seen = tls_up.requests();
    // Another name in the ClientHello (domain fronting), or none: closed, nothing upstream.
    assert_eq!(tunnel("other-tenant.example").await, "closed");
    assert_eq!(tunnel("-").await, "closed");
    assert_eq!(
        tls_up.requests(),
        seen,
        "a refused tunnel reached the upstream"
    );

    // curl through the tunnel, SNI = the URL's host: works.
    let out = curl(&[
        "--proxy",
        &pipelock.url(),
        "--cacert",
        &ca,
        &format!("https://localhost:{}/ok", tls_up.port()),
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out).1);
    // Plain HTTP inside a CONNECT to a name (curl -p) would skip pipelock's plain-HTTP DLP and
    // could carry any Host: refused. Plain HTTP as a proxy request still works.
    let plain = format!("http://localhost:{}/p", plain_up.port());
    let before = plain_up.requests();
    let out = curl(&["--proxy", &pipelock.url(), "-p", &plain]).await;
    assert!(
        !out.status.success(),
        "curl -p got through: {:?}",
        text(&out)
    );
    assert_eq!(plain_up.requests(), before);
    let out = curl(&["--proxy", &pipelock.url(), &plain]).await;
    assert!(out.status.success(), "{}", text(&out).1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_in_an_intercepted_tunnel_must_name_its_host() {
    let dir = tempfile::tempdir().unwrap();
    let upstream_ca = TestCa::new(dir.path(), "upstream-ca");
    let bottle_ca = TestCa::new(dir.path(), "bottle-ca");
    let creds = dir.path().join("creds");
    std::fs::create_dir(&creds).unwrap();
    std::fs::write(creds.join("t"), "route-token-value-0123456789").unwrap();
    let tls_up = upstream(Some(upstream_ca.ca.server_config("localhost").unwrap())).await;
    let (pipelock, _egress) = chain(
        json!([{"host": "localhost", "ports": [tls_up.port()]}]),
        json!({
            "routes": [{"host": "localhost", "headers": {"Authorization": "Bearer ${cred:t}"}}],
            "credentials_dir": creds,
            "ca_cert": bottle_ca.cert_path,
            "ca_key": bottle_ca.key_path,
            "extra_roots": [upstream_ca.cert_path],
        }),
    )
    .await;
    let url = format!("https://localhost:{}/x", tls_up.port());
    let bottle = bottle_ca.cert_path.to_str().unwrap();
    let before = tls_up.requests();
    let out = curl(&[
        "--proxy",
        &pipelock.url(),
        "--cacert",
        bottle,
        "-H",
        "Host: other.example",
        &url,
    ])
    .await;
    let (stdout, _) = text(&out);
    assert!(
        stdout.contains(
            "blocked: the request's Host (other.example) is not the tunnel's host localhost"
        ),
        "{stdout}"
    );
    assert_eq!(tls_up.requests(), before);
    let out = curl(&[
        "--proxy",
        &pipelock.url(),
        "--cacert",
        bottle,
        "-H",
        "Host: LOCALHOST:1",
        &url,
    ])
    .await;
    assert!(
        out.status.success() && tls_up.requests() == before + 1,
        "{:?}",
        text(&out)
    );
}

/// Python `script` with `HTTPS_PROXY=proxy`, trusting only `ca`; its stdout (it must succeed).
async fn python_via(script: &str, proxy: &str, ca: &str) -> String {
    let out = python(
        script,
        &[
            ("HTTPS_PROXY", proxy.to_string()),
            ("REQUESTS_CA_BUNDLE", ca.to_string()),
        ],
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    stdout
}

/// curl through `proxy` trusting only `ca`; returns (status code, body).
async fn curl_status(proxy: &str, ca: &str, args: &[&str]) -> (String, String) {
    let mut all = vec!["--proxy", proxy, "--cacert", ca, "-w", "\n%{http_code}"];
    all.extend_from_slice(args);
    let out = curl(&all).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "curl {args:?}: {stderr}");
    let (body, code) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
    (code.to_string(), body.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_to_any_host_is_scanned_before_injection_and_passthrough_stays_blind() {
    let dir = tempfile::tempdir().unwrap();
    let upstream_ca = TestCa::new(dir.path(), "upstream-ca");
    let bottle_ca = TestCa::new(dir.path(), "bottle-ca");
    let configured = "corp-db-password-Zq81xLp2Vm";
    std::fs::write(
        dir.path().join("agent.env"),
        format!("DB_PASSWORD={configured}\n"),
    )
    .unwrap();
    let creds = dir.path().join("creds");
    std::fs::create_dir(&creds).unwrap();
    std::fs::write(creds.join("t"), "route-token-value-0123456789").unwrap();
    let tls_up = upstream(Some(upstream_ca.ca.server_config("localhost").unwrap())).await;
    let egress_config = |extra: Value| {
        let mut e = json!({
            "intercept_all": true,
            "ca_cert": bottle_ca.cert_path,
            "ca_key": bottle_ca.key_path,
            "extra_roots": [upstream_ca.cert_path],
            "secret_files": [dir.path().join("agent.env")],
            "max_body_scan_bytes": 256 * 1024,
        });
        for (k, v) in extra.as_object().unwrap() {
            e[k] = v.clone();
        }
        e
    };
    let allow = json!([{"host": "localhost", "ports": [tls_up.port()]}]);
    let (pipelock, _egress) = chain(allow.clone(), egress_config(json!({}))).await;
    let proxy = pipelock.url();
    let bottle = bottle_ca.cert_path.to_str().unwrap();
    let base = format!("https://localhost:{}", tls_up.port());
    let token = "ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789";

    // Not a route host, yet intercepted: the client trusting only the bottle CA gets through.
    let (code, body) = curl_status(&proxy, bottle, &[&format!("{base}/ok")]).await;
    assert_eq!(code, "200", "{body}");

    // A benign upload arrives intact.
    let upload = dir.path().join("upload.txt");
    let text_body: String = (0..4000)
        .map(|i| format!("line {i}: the quick brown fox jumps over the lazy dog\n"))
        .collect();
    std::fs::write(&upload, &text_body).unwrap();
    let want = format!("{:x}", Sha256::digest(text_body.as_bytes()));
    let (code, got) = curl_status(
        &proxy,
        bottle,
        &[
            "--data-binary",
            &format!("@{}", upload.display()),
            &format!("{base}/sha256"),
        ],
    )
    .await;
    assert_eq!((code.as_str(), got.as_str()), ("200", want.as_str()));

    // Secrets in the body, a header or the query are refused, and never reach the upstream.
    let seen = tls_up.requests();
    for (args, rule, location) in [
        (
            vec!["-d".to_string(), format!("{{\"t\":\"{token}\"}}")],
            "github-token",
            "body",
        ),
        (
            vec!["-d".to_string(), format!("password={configured}")],
            "configured-secret",
            "body",
        ),
        (
            vec!["-H".to_string(), format!("X-Db: {configured}")],
            "configured-secret",
            "header x-db",
        ),
        (vec![], "configured-secret", "query"),
    ] {
        let url = if location == "query" {
            format!("{base}/q?p={configured}")
        } else {
            format!("{base}/p")
        };
        let mut a: Vec<&str> = args.iter().map(String::as_str).collect();
        a.push(&url);
        let (code, body) = curl_status(&proxy, bottle, &a).await;
        assert_eq!(code, "403", "{args:?}: {body}");
        assert!(
            body.contains(&format!(
                "blocked: secret detected (rule {rule}) in {location}"
            )),
            "{args:?}: {body}"
        );
        assert!(
            !body.contains(configured) && !body.contains(token),
            "{body}"
        );
    }
    // Over the scan bound: refused, not forwarded unscanned.
    let big = dir.path().join("big.bin");
    std::fs::write(&big, vec![b'a'; 300 * 1024]).unwrap();
    let (code, body) = curl_status(
        &proxy,
        bottle,
        &[
            "--data-binary",
            &format!("@{}", big.display()),
            &format!("{base}/sha256"),
        ],
    )
    .await;
    assert_eq!(code, "413", "{body}");
    assert_eq!(
        tls_up.requests(),
        seen,
        "a refused request reached the upstream"
    );

    // Python requests, keep-alive: a refused request, then an allowed one on the same session.
    let script = format!(
        "import requests\ns = requests.Session()\nr = s.post('{base}/p', json={{'k': '{token}'}}, timeout=20)\nprint(r.status_code, 'github-token' in r.text)\nr = s.get('{base}/ok', timeout=20)\nprint(r.status_code)\n"
    );
    assert_eq!(python_via(&script, &proxy, bottle).await, "403 True\n200\n");
    drop(pipelock);

    // A route host: the secret is refused before the credential is injected — the upstream
    // sees nothing at all.
    let (pipelock, _egress) = chain(
        allow.clone(),
        egress_config(json!({
            "routes": [{"host": "localhost", "headers": {"Authorization": "Bearer ${cred:t}"}}],
            "credentials_dir": creds,
        })),
    )
    .await;
    let seen = tls_up.requests();
    let (code, body) = curl_status(
        &pipelock.url(),
        bottle,
        &["-d", &format!("x={token}"), &format!("{base}/p")],
    )
    .await;
    assert_eq!(code, "403", "{body}");
    assert_eq!(tls_up.requests(), seen);
    drop(pipelock);

    // A passthrough host stays blind: the upstream's own certificate, and (the documented gap)
    // no DLP on what goes inside.
    let (pipelock, _egress) =
        chain(allow, egress_config(json!({"passthrough": ["localhost"]}))).await;
    let out = curl(&[
        "--proxy",
        &pipelock.url(),
        "--cacert",
        bottle,
        &format!("{base}/ok"),
    ])
    .await;
    assert!(
        !out.status.success(),
        "the bottle CA signed a passthrough host's certificate"
    );
    let upstream_trust = upstream_ca.cert_path.to_str().unwrap();
    let (code, _) = curl_status(
        &pipelock.url(),
        upstream_trust,
        &["-d", &format!("x={token}"), &format!("{base}/p")],
    )
    .await;
    assert_eq!(code, "200");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_placeholders_fill_the_url_and_bodies_for_their_hosts_only() {
    let dir = tempfile::tempdir().unwrap();
    let upstream_ca = TestCa::new(dir.path(), "upstream-ca");
    let bottle_ca = TestCa::new(dir.path(), "bottle-ca");
    let value = "vault+value/7f3a\"9c1e";
    std::fs::write(dir.path().join("vault-x"), value).unwrap();
    std::fs::write(dir.path().join("vault-y"), "other-host-secret-value").unwrap();
    let tls_up = upstream(Some(upstream_ca.ca.server_config("localhost").unwrap())).await;
    let (pipelock, _egress) = chain(
        json!([{"host": "localhost", "ports": [tls_up.port()]}]),
        json!({
            "intercept_all": true,
            "vault": {
                "X": {"file": dir.path().join("vault-x"), "hosts": ["localhost"]},
                "Y": {"file": dir.path().join("vault-y"), "hosts": ["other.example"]},
            },
            "ca_cert": bottle_ca.cert_path,
            "ca_key": bottle_ca.key_path,
            "extra_roots": [upstream_ca.cert_path],
        }),
    )
    .await;
    let proxy = pipelock.url();
    let bottle = bottle_ca.cert_path.to_str().unwrap();
    let base = format!("https://localhost:{}", tls_up.port());
    let last_uri = || {
        tls_up.last_headers()["x-seen-uri"]
            .to_str()
            .unwrap()
            .to_string()
    };

    // In the query, as Python requests encodes it.
    let script = format!(
        "import requests\nr = requests.get('{base}/q', params={{'key': '${{vault:X}}'}}, timeout=20)\nprint(r.status_code)\n"
    );
    assert_eq!(python_via(&script, &proxy, bottle).await.trim(), "200");
    assert_eq!(last_uri(), "/q?key=vault%2Bvalue%2F7f3a%229c1e");

    // In a JSON body: it arrives substituted (the upstream hashes what it got).
    let sent = r#"{"token":"${vault:X}","n":1}"#;
    let expected = format!(
        r#"{{"token":{},"n":1}}"#,
        serde_json::to_string(value).unwrap()
    );
    let want = format!("{:x}", Sha256::digest(expected.as_bytes()));
    let (code, got) = curl_status(
        &proxy,
        bottle,
        &[
            "-H",
            "content-type: application/json",
            "--data-binary",
            sent,
            &format!("{base}/sha256"),
        ],
    )
    .await;
    assert_eq!((code.as_str(), got.as_str()), ("200", want.as_str()));

    // A form body.
    let (code, got) = curl_status(
        &proxy,
        bottle,
        &[
            "--data-urlencode",
            "k=${vault:X}",
            &format!("{base}/sha256"),
        ],
    )
    .await;
    let want = format!("{:x}", Sha256::digest(b"k=vault%2Bvalue%2F7f3a%229c1e"));
    assert_eq!((code.as_str(), got.as_str()), ("200", want.as_str()));

    // Another host's placeholder, in the body or the URL: refused, nothing sent.
    let seen = tls_up.requests();
    let (code, body) = curl_status(
        &proxy,
        bottle,
        &[
            "-H",
            "content-type: application/json",
            "-d",
            r#"{"t":"${vault:Y}"}"#,
            &format!("{base}/p"),
        ],
    )
    .await;
    assert_eq!(code, "403", "{body}");
    assert!(
        body.contains("blocked: vault placeholder ${vault:Y} is not scoped to localhost"),
        "{body}"
    );
    let (code, _) = curl_status(&proxy, bottle, &[&format!("{base}/p?t=$%7Bvault:Y%7D")]).await;
    assert_eq!(code, "403");
    assert_eq!(tls_up.requests(), seen);
    assert!(!body.contains("other-host-secret-value"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_in_host_labels_is_refused_before_any_lookup_and_random_path_segments_too() {
    // Under a wildcard, every lookup of a name below it would carry its labels out: the
    // refusal must come from the DLP (403), never from a failed lookup (502).
    let up = upstream(None).await;
    let (pipelock, _egress) = chain(
        json!([{"host": "*.exfil.test"}, {"host": "localhost", "ports": [up.addr.port()]}]),
        json!({}),
    )
    .await;
    for host in [
        "7365637265745f6170695f6b6579.exfil.test",
        "7365.6372.6574.5f61.7069.exfil.test",
        "a8f3k.q9z2m.x7b4n.p1c6v.exfil.test",
        "AKIAIOSF.ODNN7EXAMPLE.exfil.test",
    ] {
        let r = connect(pipelock.addr, &format!("{host}:443")).await;
        assert_eq!(r.status, 403, "{host}: {}", r.body);
        assert!(
            r.reason.starts_with("blocked: secret detected (rule ")
                && r.reason.ends_with(" in host"),
            "{host}: {}",
            r.reason
        );
        let out = curl(&["--proxy", &pipelock.url(), &format!("http://{host}/")]).await;
        assert!(text(&out).0.contains("in host"), "{host}: {:?}", text(&out));
    }
    let r = connect(pipelock.addr, "7365637265745f6170695f6b6579.exfil.test:443").await;
    assert!(r.reason.contains("rule host-encoded-data"), "{}", r.reason);
    // A random path segment on an allowed host; the same host with a plain path is reached.
    let host = format!("localhost:{}", up.addr.port());
    let out = curl(&[
        "--proxy",
        &pipelock.url(),
        &format!("http://{host}/api/x7Kp2mQ9vR4sL8nW1bY6cT3fA0jH5dE/status"),
    ])
    .await;
    assert!(
        text(&out).0.contains("rule path-random-segment) in path"),
        "{:?}",
        text(&out)
    );
    let out = curl(&[
        "-w",
        "%{http_code}",
        "--proxy",
        &pipelock.url(),
        &format!("http://{host}/repos/acme/app/commits/3f786850e387550fdab836ed7e6dc881de23001b"),
    ])
    .await;
    assert!(text(&out).0.ends_with("200"), "{:?}", text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operators_dlp_allowlist_lets_what_it_names_through_and_nothing_else() {
    let up = upstream(None).await;
    let egress = start_egress(
        json!({"listen": "127.0.0.1:0", "allow_from": ["127.0.0.1/32"], "allow_cidrs": [LOOPBACK]}),
    )
    .await;
    let pipelock = start_pipelock(json!({
        "upstream": egress.addr.to_string(),
        "allow": [{"host": "localhost", "ports": [up.addr.port()]}],
        "allow_cidrs": [LOOPBACK, "::1/128"],
        "dlp_allow": {"stopwords": ["FIXTURE"], "regexes": ["^AKIAZ7QJ4TESTKEY[0-9]{4}$"]},
    }))
    .await;
    let get = |q: &'static str| {
        let url = format!("http://localhost:{}/x?k={q}", up.addr.port());
        let proxy = pipelock.url();
        async move {
            let out = curl(&[
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--proxy",
                &proxy,
                &url,
            ])
            .await;
            text(&out).0
        }
    };
    assert_eq!(get("AKIAZ7QJ4FIXTURE7KQ2").await, "200");
    assert_eq!(get("AKIAZ7QJ4TESTKEY1234").await, "200");
    assert_eq!(get("AKIAZ7QJ4REALKEY7KQ3").await, "403");
    // An allowed value next to a real one: the real one is still refused.
    assert_eq!(
        get("AKIAZ7QJ4FIXTURE7KQ2,AKIAZ7QJ4REALKEY7KQ3").await,
        "403"
    );
}

/// Streaming DLP on decrypted HTTPS (egress `stream_scan`): a body past the first window is
/// forwarded as its windows pass, a secret anywhere in it — across any window boundary, sent
/// with a length or chunked — stops it with the same 403, the upstream gets a cut-off request
/// without the secret, and a benign body of several windows arrives intact. A chunked body
/// past the scan bound is a 413 mid-stream, never forwarded whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_bodies_are_scanned_as_they_stream_and_a_secret_anywhere_stops_them() {
    use egress::stream_scan::{OVERLAP, WINDOW};
    let dir = tempfile::tempdir().unwrap();
    let upstream_ca = TestCa::new(dir.path(), "upstream-ca");
    let bottle_ca = TestCa::new(dir.path(), "bottle-ca");
    let tls_up = upstream(Some(upstream_ca.ca.server_config("localhost").unwrap())).await;
    let limit = 6 * WINDOW;
    let (pipelock, _egress) = chain(
        json!([{"host": "localhost", "ports": [tls_up.port()]}]),
        json!({
            "intercept_all": true,
            "ca_cert": bottle_ca.cert_path,
            "ca_key": bottle_ca.key_path,
            "extra_roots": [upstream_ca.cert_path],
            "max_body_scan_bytes": limit,
        }),
    )
    .await;
    let proxy = pipelock.url();
    let bottle = bottle_ca.cert_path.to_str().unwrap();
    let base = format!("https://localhost:{}", tls_up.port());
    let token = "ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789";
    let size = 5 * WINDOW;
    let benign: Vec<u8> = (0..size)
        .map(|i| b"the quick brown fox jumps over the lazy dog\n"[i % 44])
        .collect();
    let file = dir.path().join("body.txt");
    let chunked = ["-H", "Transfer-Encoding: chunked"];

    // Benign, five windows: intact, with a length and chunked.
    std::fs::write(&file, &benign).unwrap();
    let want = format!("{:x}", Sha256::digest(&benign));
    for extra in [&[][..], &chunked[..]] {
        let data = format!("@{}", file.display());
        let url = format!("{base}/sha256");
        let mut args = vec!["--data-binary", &data, &url];
        args.extend_from_slice(extra);
        let (code, got) = curl_status(&proxy, bottle, &args).await;
        assert_eq!(
            (code.as_str(), got.as_str()),
            ("200", want.as_str()),
            "{extra:?}"
        );
    }

    // A secret across each window boundary, inside the overlap, and deep in the body.
    let mut offsets: Vec<usize> = (1..5).map(|k| k * WINDOW - token.len() / 2).collect();
    offsets.extend([
        WINDOW + OVERLAP - 7,
        3 * WINDOW + 12_345,
        size - token.len() - 1,
    ]);
    for (n, at) in offsets.iter().enumerate() {
        // On a line of its own (a token glued to letters is no token).
        let mut body = benign.clone();
        let line = format!("\n{token}\n");
        body[*at - 1..*at - 1 + line.len()].copy_from_slice(line.as_bytes());
        std::fs::write(&file, &body).unwrap();
        let extra: &[&str] = if n % 2 == 0 { &[] } else { &chunked };
        let data = format!("@{}", file.display());
        let url = format!("{base}/record");
        let mut args = vec!["--data-binary", &data, &url];
        args.extend_from_slice(extra);
        let (code, answer) = curl_status(&proxy, bottle, &args).await;
        assert_eq!(code, "403", "secret at {at}: {answer}");
        assert!(
            answer.contains("blocked: secret detected (rule github-token) in body"),
            "secret at {at}: {answer}"
        );
    }
    let recorded = tls_up.recorded.lock().unwrap().clone();
    assert!(
        !recorded.is_empty(),
        "no refused body was streamed at all (every secret caught in the first window?)"
    );
    for (got, complete) in &recorded {
        assert!(!complete, "a refused body reached the upstream whole");
        assert!(
            !got.windows(token.len()).any(|w| w == token.as_bytes())
                && !got.windows(8).any(|w| w == &token.as_bytes()[..8]),
            "the upstream received (part of) the secret"
        );
    }

    // Chunked (no length to refuse up front) and past the bound: 413 mid-stream.
    let over: Vec<u8> = benign.iter().chain(&benign).copied().collect();
    assert!(over.len() > limit);
    std::fs::write(&file, &over).unwrap();
    let before = tls_up.recorded.lock().unwrap().len();
    let data = format!("@{}", file.display());
    let url = format!("{base}/record");
    let (code, answer) = curl_status(
        &proxy,
        bottle,
        &[
            "--data-binary",
            &data,
            &url,
            "-H",
            "Transfer-Encoding: chunked",
        ],
    )
    .await;
    assert_eq!(code, "413", "{answer}");
    let recorded = tls_up.recorded.lock().unwrap().clone();
    assert!(recorded[before..]
        .iter()
        .all(|(got, complete)| !complete && got.len() <= limit));
}
