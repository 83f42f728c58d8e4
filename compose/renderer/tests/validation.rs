//! Every manifest error the renderer reports, each named by its field's path, and all of them
//! at once.

use bottle_compose::{Manifest, ManifestError};

fn problems(text: &str) -> Vec<String> {
    match Manifest::parse(text, Some("t.toml")) {
        Err(ManifestError::Invalid { problems, .. }) => {
            problems.iter().map(|p| p.to_string()).collect()
        }
        other => panic!("expected validation problems, got {other:?}"),
    }
}

fn parse_error(text: &str, name: &str) -> (String, String) {
    match Manifest::parse(text, Some(name)) {
        Err(ManifestError::Parse { field, message, .. }) => (field, message),
        other => panic!("expected a parse error, got {other:?}"),
    }
}

fn has(problems: &[String], prefix: &str) {
    assert!(
        problems.iter().any(|p| p.starts_with(prefix)),
        "no problem starting with {prefix:?} in:\n{}",
        problems.join("\n")
    );
}

const AGENT: &str = "[agent]\nimage = \"img:1\"\n";

#[test]
fn unknown_top_level_field_is_named() {
    let (field, message) = parse_error(&format!("slug = \"a\"\nslgu = 1\n{AGENT}"), "t.toml");
    assert!(message.contains("slgu"), "{field}: {message}");
}

#[test]
fn unknown_nested_field_is_named_with_its_path() {
    let (field, message) = parse_error(
        "slug = \"a\"\n[agent]\nimage = \"i\"\ncomand = []\n",
        "t.toml",
    );
    assert_eq!(field, "agent.comand", "{message}");
    assert!(message.contains("comand"), "{message}");
}

#[test]
fn wrong_type_names_the_element() {
    let (field, _) = parse_error(
        "slug = \"a\"\n[agent]\nimage = \"i\"\ncommand = [\"a\", 2]\n",
        "t.toml",
    );
    assert_eq!(field, "agent.command[1]");
}

#[test]
fn unknown_daemon_is_named() {
    let (field, message) = parse_error(
        &format!("slug = \"a\"\ndaemons = [\"pack-exec\", \"bogus\"]\n{AGENT}"),
        "t.toml",
    );
    assert_eq!(field, "daemons[1]", "{message}");
    assert!(message.contains("bogus"), "{message}");
}

#[test]
fn bad_restart_policy_is_named() {
    let (field, _) = parse_error(
        &format!("slug = \"a\"\n{AGENT}[daemon_settings.pack-exec]\nrestart = \"sometimes\"\n"),
        "t.toml",
    );
    assert_eq!(field, "daemon_settings.pack-exec.restart");
}

#[test]
fn json_errors_carry_paths_too() {
    let (field, message) = parse_error(
        r#"{"slug":"a","agent":{"image":"i","env":{"A":1}}}"#,
        "m.json",
    );
    assert_eq!(field, "agent.env.A", "{message}");
}

#[test]
fn missing_required_field_is_reported() {
    let (_, message) = parse_error("slug = \"a\"\n", "t.toml");
    assert!(message.contains("agent"), "{message}");
}

#[test]
fn format_is_detected_by_extension_then_content() {
    let json = r#"{"slug":"a","agent":{"image":"i"}}"#;
    assert!(Manifest::parse(json, Some("bottle.json")).is_ok());
    assert!(Manifest::parse(json, None).is_ok());
    assert!(Manifest::parse(&format!("slug = \"a\"\n{AGENT}"), None).is_ok());
    assert!(Manifest::parse(&format!("slug = \"a\"\n{AGENT}"), Some("bottle")).is_ok());
}

#[test]
fn every_problem_is_reported_at_once_with_its_path() {
    let text = r#"
slug = "Bad_Slug"
daemons = ["pack-exec", "pack-exec", "pipelock"]
packs = ["../packs/cmd.upper", "other/cmd.upper", ".."]
sidecar_image = "bad image"
passthrough = ["*.pinned.example", "not-listed.example"]
upstream_roots = ["NOT_DECLARED"]

[agent]
image = "has space"
command = [""]
user = "0:0"
env = { "1BAD" = "x", PACK_EXEC_URL = "http://elsewhere", HTTPS_PROXY = "x", OK = "nul\u0000" }

[daemon_settings.pack-exec]
grace_ms = 60000
ready_timeout_ms = 1
env = { "bad-name" = "x" }

[daemon_settings.git-gate]
restart = "never"

[daemon_settings.bogus]

[[allowlist]]
host = "Not A Host"
ports = [0]

[[allowlist]]
host = "*.example.com"
ports = []

[[routes]]
host = "*.wild.example"
headers = { "Bad Header" = "Bearer ${vault:MISSING}", X-Ok = "line\nbreak" }
rules = [{ allow = "GET /ok/**" }, "write-all"]

[credentials.lower_case]
file = "relative/path"

[[git]]
name = "Repo"
upstream = "not a url"
credential = "NOPE"
deny_paths = ["/abs/path", ".github/**"]

[[git]]
name = "dup"
upstream = "https://example.com/a.git"

[[git]]
name = "dup"
upstream = "git@example.com:a.git"

[resources.agent]
cpus = 0.0
memory = "lots"

[resources.sidecars]
cpus = 2000.0
memory = "1m"
"#;
    let p = problems(text);
    for prefix in [
        "slug:",
        "agent.image:",
        "agent.command[0]:",
        "agent.user:",
        "agent.env.1BAD:",
        "agent.env.PACK_EXEC_URL:",
        "agent.env.OK:",
        "daemons[1]: pack-exec is listed twice",
        "daemon_settings.pack-exec.grace_ms:",
        "daemon_settings.pack-exec.ready_timeout_ms:",
        "daemon_settings.pack-exec.env.bad-name:",
        "daemon_settings.git-gate: git-gate is not in `daemons`",
        "daemon_settings.bogus: unknown daemon",
        "allowlist[0].host:",
        "allowlist[0].ports[0]:",
        "allowlist[1].ports:",
        "routes: is used by egress",
        "routes[0].host:",
        "routes[0].headers.Bad Header: is not a valid HTTP header name",
        "routes[0].headers.Bad Header: references ${vault:MISSING}",
        "routes[0].headers.X-Ok: contains a line break",
        "routes[0].rules[1]: unknown preset \"write-all\"",
        "passthrough[0]: \"*.pinned.example\" is not an exact host name",
        "passthrough[1]: \"not-listed.example\" is not on the allowlist",
        "upstream_roots[0]: \"NOT_DECLARED\" is not a declared credential",
        "credentials.lower_case: is not a valid credential name",
        "credentials.lower_case.file:",
        "credentials.lower_case: is not used",
        "git: is used by git-gate",
        "git[0].name:",
        "git[0].upstream:",
        "git[0].credential:",
        "git[0].deny_paths[0]: \"/abs/path\": write repository paths without a leading `/`",
        "git[2].name: \"dup\" is used twice",
        "packs[1]: a pack directory named \"cmd.upper\" is listed twice",
        "packs[2]:",
        "resources.agent.cpus:",
        "resources.agent.memory:",
        "resources.sidecars.cpus:",
        "resources.sidecars.memory:",
        "sidecar_image:",
    ] {
        has(&p, prefix);
    }
    // HTTPS_PROXY is only reserved when pipelock is enabled, which it is here.
    has(&p, "agent.env.HTTPS_PROXY:");
}

#[test]
fn renderer_env_names_are_free_when_their_daemon_is_off() {
    let text = format!("slug = \"a\"\n{AGENT}env = {{ HTTPS_PROXY = \"http://corp:3128\" }}\n");
    assert!(Manifest::parse(&text, Some("t.toml")).is_ok());
}

#[test]
fn allowlist_without_pipelock_is_refused() {
    let p = problems(&format!(
        "slug = \"a\"\n{AGENT}[[allowlist]]\nhost = \"example.com\"\n"
    ));
    has(
        &p,
        "allowlist: is used by pipelock, which is not in `daemons`",
    );
}

#[test]
fn packs_without_pack_exec_are_refused() {
    let p = problems(&format!(
        "slug = \"a\"\ndaemons = []\npacks = [\"p/x\"]\n{AGENT}"
    ));
    has(&p, "packs: is used by pack-exec");
}

#[test]
fn error_display_lists_every_problem_with_the_origin() {
    let err =
        Manifest::parse("slug = \"-\"\n[agent]\nimage = \"\"\n", Some("bottle.toml")).unwrap_err();
    let msg = err.to_string();
    assert!(msg.starts_with("invalid manifest bottle.toml:"), "{msg}");
    assert!(
        msg.contains("  - slug:") && msg.contains("  - agent.image:"),
        "{msg}"
    );
}

#[test]
fn proxy_chain_inputs_are_checked() {
    let p = problems(&format!(
        r#"slug = "a"
daemons = ["egress", "pack-exec"]
allow_cidrs = ["127.0.0.1", "10.0.0.0/8"]
{AGENT}
[credentials.TOKEN]
file = "/t"

[[routes]]
host = "api.example.com"
headers = {{ Authorization = "Bearer ${{vault:TOKEN}} ${{HOME}}" }}

[vault.MISSING]
hosts = []

[vault.TOKEN]
hosts = ["*.example.com", "other.example.com"]
"#
    ));
    for prefix in [
        "daemons: egress needs pipelock",
        "allow_cidrs: is used by pipelock",
        "allow_cidrs[0]: \"127.0.0.1\" is not a CIDR",
        "routes[0].host: \"api.example.com\" is not on the allowlist",
        "routes[0].headers.Authorization: `${` may only start a ${vault:NAME} (or ${cred:NAME}) reference",
        "vault.MISSING: \"MISSING\" is not in `credentials`",
        "vault.MISSING.hosts: must not be empty",
        "vault.TOKEN.hosts[0]: \"*.example.com\" is not a host name",
        "vault.TOKEN.hosts[1]: \"other.example.com\" is not on the allowlist",
    ] {
        has(&p, prefix);
    }
    assert!(!p.iter().any(|x| x.starts_with("allow_cidrs[1]")), "{p:?}");
}

#[test]
fn vault_needs_egress_and_uses_its_credential() {
    let p = problems(&format!(
        "slug = \"a\"\n{AGENT}[credentials.TOKEN]\nfile = \"/t\"\n[vault.TOKEN]\nhosts = [\"a.com\"]\n"
    ));
    has(&p, "vault: is used by egress");
    assert!(
        !p.iter()
            .any(|x| x.starts_with("credentials.TOKEN: is not used")),
        "a vault entry uses its credential: {p:?}"
    );
    // A wildcard allowlist rule covers subdomains, not the apex.
    let ok = format!(
        "slug = \"a\"\ndaemons = [\"pipelock\", \"egress\"]\n{AGENT}[[allowlist]]\nhost = \"*.a.com\"\n\
         [credentials.TOKEN]\nfile = \"/t\"\n[vault.TOKEN]\nhosts = [\"api.a.com\"]\n"
    );
    assert!(Manifest::parse(&ok, Some("t.toml")).is_ok());
    let apex = ok.replace("api.a.com", "a.com");
    has(
        &problems(&apex),
        "vault.TOKEN.hosts[0]: \"a.com\" is not on the allowlist",
    );
}

#[test]
fn git_upstreams_follow_git_gate() {
    let p = problems(&format!(
        r#"slug = "a"
daemons = ["git-gate"]
{AGENT}
[credentials.TOKEN]
file = "/t"

[[git]]
name = "ssh"
upstream = "ssh://git@example.com/a.git"

[[git]]
name = "scp"
upstream = "git@example.com:a.git"

[[git]]
name = "anon"
upstream = "git://example.com/a.git"
credential = "TOKEN"

[[git]]
name = "inline"
upstream = "https://user:pw@example.com/a.git"

[[git]]
name = "repo.git"
upstream = "/srv/repo.git"
"#
    ));
    for prefix in [
        "git[0].upstream: \"ssh://",
        "git[1].upstream: \"git@",
        "git[2].credential: only http(s) upstreams take a credential",
        "git[3].upstream: carries credentials in the URL",
        "git[4].name:",
    ] {
        has(&p, prefix);
    }
}

#[test]
fn resource_bounds_are_checked_with_their_paths() {
    let p = problems(&format!(
        "slug = \"a\"\n{AGENT}\
         [resources.agent]\npids = 3\ntmp_size = \"512k\"\n\
         [resources.sidecars]\npids = 10\ntmp_size = \"lots\"\n\
         [resources.handlers]\nprocesses = 0\naddress_space = \"1m\"\nfile_size = \"1b\"\nopen_files = 2\n"
    ));
    for prefix in [
        "resources.agent.pids: 3 is out of range (16 to 4194304)",
        "resources.agent.tmp_size: \"512k\" is not a size",
        "resources.sidecars.pids: 10 is out of range (64 to 4194304)",
        "resources.sidecars.tmp_size: \"lots\" is not a size",
        "resources.handlers.processes: 0 is out of range (1 to 65536)",
        "resources.handlers.address_space: \"1m\" is not a size",
        "resources.handlers.file_size: \"1b\" is not a size",
        "resources.handlers.open_files: 2 is out of range (16 to 1048576)",
    ] {
        has(&p, prefix);
    }
    assert_eq!(p.len(), 8, "{p:#?}");
    // In range: accepted.
    let ok = format!(
        "slug = \"a\"\n{AGENT}\
         [resources.agent]\npids = 16\ntmp_size = \"1m\"\n\
         [resources.sidecars]\npids = 64\n\
         [resources.handlers]\nprocesses = 1\naddress_space = \"16m\"\nfile_size = \"1k\"\nopen_files = 16\n"
    );
    assert!(Manifest::parse(&ok, Some("t.toml")).is_ok());
}

#[test]
fn handler_limits_and_unsigned_packs_need_pack_exec() {
    let p = problems(&format!(
        "slug = \"a\"\ndaemons = [\"supervise\"]\nallow_unsigned_packs = true\n{AGENT}\
         [resources.handlers]\nopen_files = 64\n"
    ));
    has(
        &p,
        "resources.handlers: is used by pack-exec, which is not in `daemons`",
    );
    has(
        &p,
        "allow_unsigned_packs: is used by pack-exec, which is not in `daemons`",
    );
    // false is the default: saying so needs nothing.
    let text =
        format!("slug = \"a\"\ndaemons = [\"supervise\"]\nallow_unsigned_packs = false\n{AGENT}");
    assert!(Manifest::parse(&text, Some("t.toml")).is_ok());
}

#[test]
fn unknown_resource_keys_are_named() {
    let (field, message) = parse_error(
        &format!("slug = \"a\"\n{AGENT}[resources.handlers]\nprocess = 1\n"),
        "t.toml",
    );
    assert_eq!(field, "resources.handlers.process", "{message}");
    let (field, _) = parse_error(
        &format!("slug = \"a\"\n{AGENT}[resources.agent]\npids = \"many\"\n"),
        "t.toml",
    );
    assert_eq!(field, "resources.agent.pids");
}

#[test]
fn a_credential_is_a_file_or_generated_never_both_or_neither() {
    let base = "slug = \"a\"\ndaemons = [\"pipelock\", \"egress\"]\n[[allowlist]]\nhost = \"h.example\"\n[[routes]]\nhost = \"h.example\"\nheaders = { X = \"${vault:TOKEN}\" }\n";
    let both = problems(&format!(
        "{base}[credentials.TOKEN]\nfile = \"/etc/t\"\ngenerate = true\n{AGENT}"
    ));
    has(
        &both,
        "credentials.TOKEN: has both `file` and `generate = true`",
    );
    let neither = problems(&format!("{base}[credentials.TOKEN]\n{AGENT}"));
    has(&neither, "credentials.TOKEN: needs `file = ");
    let generated = format!("{base}[credentials.TOKEN]\ngenerate = true\n{AGENT}");
    Manifest::parse(&generated, Some("t.toml")).expect("a generated credential is valid");
}

#[test]
fn a_bad_dlp_allowlist_is_refused_entry_by_entry() {
    let p = problems(&format!(
        "slug = \"a\"\ndaemons = [\"pipelock\"]\n{AGENT}[dlp_allow]\nregexes = [\"(\", \".*\"]\nstopwords = [\"ab\"]\npaths = [\"/abs/**\"]\n"
    ));
    has(&p, "dlp_allow.regexes[0]: not a regex");
    has(&p, "dlp_allow.regexes[1]: \".*\" matches the empty string");
    has(
        &p,
        "dlp_allow.stopwords[0]: \"ab\" is shorter than 4 characters",
    );
    has(
        &p,
        "dlp_allow.paths[0]: \"/abs/**\": write repository paths without a leading `/`",
    );
    has(
        &p,
        "dlp_allow.paths: is used by git-gate, which is not in `daemons`",
    );
}

#[test]
fn https_body_limit_is_a_size_of_at_least_1m_and_needs_egress() {
    let with = |daemons: &str, limit: &str| {
        format!("slug = \"s\"\ndaemons = [{daemons}]\nhttps_body_limit = \"{limit}\"\n[agent]\nimage = \"a:1\"\n")
    };
    let p = problems(&with("\"pipelock\", \"egress\"", "512k"));
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].starts_with("https_body_limit: \"512k\" is not a size"),
        "{p:?}"
    );
    assert!(problems(&with("\"pipelock\", \"egress\"", "lots"))[0].contains("at least 1m"));
    assert!(problems(&with("\"pack-exec\"", "8m"))
        .iter()
        .any(|l| l.starts_with("https_body_limit:") && l.contains("egress")));
    let m = Manifest::parse(&with("\"pipelock\", \"egress\"", "8m"), Some("t.toml")).unwrap();
    let b = bottle_compose::render(&m, &bottle_compose::RenderOptions::default()).unwrap();
    let egress = b
        .files
        .iter()
        .find(|f| f.path == "config/egress.json")
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&egress.contents).unwrap();
    assert_eq!(v["max_body_scan_bytes"], 8 << 20);
}
