//! The API's routes: method + path → [`Route`], and the query parameters of the logs route.
//! Pure, so every path rule (including what is rejected) is unit-tested without a server.

use http::Method;

/// One API operation, with its path parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `GET /healthz`: liveness (no auth).
    Healthz,
    /// `POST /v1/bottles`: create a bottle from a manifest.
    Create,
    /// `GET /v1/bottles`.
    List,
    /// `GET /v1/bottles/{slug}`.
    Get(String),
    /// `DELETE /v1/bottles/{slug}`.
    Delete(String),
    /// `GET /v1/bottles/{slug}/compose.yaml`.
    ComposeYaml(String),
    /// `GET /v1/bottles/{slug}/logs`.
    Logs(String),
    /// `POST /v1/bottles/{slug}/packs/{name}`.
    PackCall(String, String),
    /// `PUT /v1/bottles/{slug}/packs/{name}` (body: the pack as tar.gz).
    PackInstall(String, String),
    /// `DELETE /v1/bottles/{slug}/packs/{name}`.
    PackDelete(String, String),
    /// `GET /v1/bottles/{slug}/approvals` (`?pending=1`).
    Approvals(String),
    /// `GET /v1/bottles/{slug}/approvals/{id}`.
    Approval(String, String),
    /// `POST /v1/bottles/{slug}/approvals/{id}/approve|deny` (true: approve).
    Decide(String, String, bool),
    /// `PUT /v1/bottles/{slug}/kill-switch` (body `{"engaged": bool}`).
    KillSwitch(String),
    /// `POST /v1/bottles/{slug}/reload`.
    Reload(String),
}

/// Why a request matched no route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoRoute {
    /// No such path (404).
    NotFound,
    /// The path exists with other methods (405, `Allow` lists them).
    Method(&'static str),
}

/// Match a request line to a route.
pub fn route(method: &Method, path: &str) -> Result<Route, NoRoute> {
    let parts: Vec<&str> = path.strip_prefix('/').unwrap_or(path).split('/').collect();
    let allow = |allowed: &'static str, ok: Route| {
        if allowed.split(", ").any(|m| m == method.as_str()) {
            Ok(ok)
        } else {
            Err(NoRoute::Method(allowed))
        }
    };
    let seg = |s: &str| s.to_string();
    match parts.as_slice() {
        ["healthz"] => allow("GET", Route::Healthz),
        ["v1", "bottles"] => match *method {
            Method::POST => Ok(Route::Create),
            Method::GET => Ok(Route::List),
            _ => Err(NoRoute::Method("GET, POST")),
        },
        ["v1", "bottles", slug] if !slug.is_empty() => match *method {
            Method::GET => Ok(Route::Get(seg(slug))),
            Method::DELETE => Ok(Route::Delete(seg(slug))),
            _ => Err(NoRoute::Method("GET, DELETE")),
        },
        ["v1", "bottles", slug, "compose.yaml"] if !slug.is_empty() => {
            allow("GET", Route::ComposeYaml(seg(slug)))
        }
        ["v1", "bottles", slug, "logs"] if !slug.is_empty() => allow("GET", Route::Logs(seg(slug))),
        ["v1", "bottles", slug, "packs", name] if !slug.is_empty() && !name.is_empty() => {
            match *method {
                Method::POST => Ok(Route::PackCall(seg(slug), seg(name))),
                Method::PUT => Ok(Route::PackInstall(seg(slug), seg(name))),
                Method::DELETE => Ok(Route::PackDelete(seg(slug), seg(name))),
                _ => Err(NoRoute::Method("POST, PUT, DELETE")),
            }
        }
        ["v1", "bottles", slug, "kill-switch"] if !slug.is_empty() => {
            allow("PUT", Route::KillSwitch(seg(slug)))
        }
        ["v1", "bottles", slug, "reload"] if !slug.is_empty() => {
            allow("POST", Route::Reload(seg(slug)))
        }
        ["v1", "bottles", slug, "approvals"] if !slug.is_empty() => {
            allow("GET", Route::Approvals(seg(slug)))
        }
        ["v1", "bottles", slug, "approvals", id] if !slug.is_empty() && !id.is_empty() => {
            allow("GET", Route::Approval(seg(slug), seg(id)))
        }
        ["v1", "bottles", slug, "approvals", id, verb @ ("approve" | "deny")]
            if !slug.is_empty() && !id.is_empty() =>
        {
            allow(
                "POST",
                Route::Decide(seg(slug), seg(id), *verb == "approve"),
            )
        }
        _ => Err(NoRoute::NotFound),
    }
}

/// A boolean query parameter: present without a value, `1`/`true`, or `0`/`false`.
fn flag(key: &str, value: &str) -> Result<bool, String> {
    match value {
        "" | "1" | "true" => Ok(true),
        "0" | "false" => Ok(false),
        _ => Err(format!("{key}: {value:?} is not 1/0/true/false")),
    }
}

/// Parse `?pending=1` of the approvals list (the only parameter).
pub fn approvals_query(query: Option<&str>) -> Result<bool, String> {
    let mut pending = false;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=').unwrap_or((pair, "")) {
            ("pending", v) => pending = flag("pending", v)?,
            (k, _) => return Err(format!("unknown query parameter {k:?} (known: pending)")),
        }
    }
    Ok(pending)
}

/// Parse `?allow_unsigned=1&replace_shipped=1&self_test=1` of a pack install.
pub fn install_query(query: Option<&str>) -> Result<crate::packs::InstallFlags, String> {
    let mut flags = crate::packs::InstallFlags::default();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=').unwrap_or((pair, "")) {
            ("allow_unsigned", v) => flags.allow_unsigned = flag("allow_unsigned", v)?,
            ("replace_shipped", v) => flags.replace_shipped = flag("replace_shipped", v)?,
            ("self_test", v) => flags.self_test = flag("self_test", v)?,
            (k, _) => {
                return Err(format!(
                "unknown query parameter {k:?} (known: allow_unsigned, replace_shipped, self_test)"
            ))
            }
        }
    }
    Ok(flags)
}

/// Query of `GET /v1/bottles/{slug}/logs`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogsQuery {
    /// Only this daemon's lines.
    pub daemon: Option<String>,
    /// The last N lines.
    pub tail: Option<u64>,
    /// Keep the response open and stream new lines.
    pub follow: bool,
}

/// Parse the logs query; unknown keys and bad values are errors naming the parameter.
pub fn logs_query(query: Option<&str>) -> Result<LogsQuery, String> {
    let mut q = LogsQuery::default();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "daemon" => {
                if value.is_empty()
                    || !value
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                {
                    return Err(format!("daemon: {value:?} is not a daemon name"));
                }
                q.daemon = Some(value.to_string());
            }
            "tail" => {
                q.tail = Some(
                    value
                        .parse()
                        .map_err(|_| format!("tail: {value:?} is not a number of lines"))?,
                )
            }
            "follow" => q.follow = flag(key, value)?,
            _ => {
                return Err(format!(
                    "unknown query parameter {key:?} (known: daemon, tail, follow)"
                ))
            }
        }
    }
    Ok(q)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_and_its_methods() {
        let r = |m: Method, p: &str| route(&m, p);
        assert_eq!(r(Method::GET, "/healthz"), Ok(Route::Healthz));
        assert_eq!(r(Method::POST, "/v1/bottles"), Ok(Route::Create));
        assert_eq!(r(Method::GET, "/v1/bottles"), Ok(Route::List));
        assert_eq!(
            r(Method::GET, "/v1/bottles/a1"),
            Ok(Route::Get("a1".into()))
        );
        assert_eq!(
            r(Method::DELETE, "/v1/bottles/a1"),
            Ok(Route::Delete("a1".into()))
        );
        assert_eq!(
            r(Method::GET, "/v1/bottles/a1/compose.yaml"),
            Ok(Route::ComposeYaml("a1".into()))
        );
        assert_eq!(
            r(Method::GET, "/v1/bottles/a1/logs"),
            Ok(Route::Logs("a1".into()))
        );
        assert_eq!(
            r(Method::POST, "/v1/bottles/a1/packs/cmd.upper"),
            Ok(Route::PackCall("a1".into(), "cmd.upper".into()))
        );
        assert_eq!(
            r(Method::PUT, "/v1/bottles/a1/packs/cmd.upper"),
            Ok(Route::PackInstall("a1".into(), "cmd.upper".into()))
        );
        assert_eq!(
            r(Method::DELETE, "/v1/bottles/a1/packs/cmd.upper"),
            Ok(Route::PackDelete("a1".into(), "cmd.upper".into()))
        );
        assert_eq!(
            r(Method::GET, "/v1/bottles/a1/packs/cmd.upper"),
            Err(NoRoute::Method("POST, PUT, DELETE"))
        );
        assert_eq!(
            install_query(Some("allow_unsigned=1&replace_shipped=true")),
            Ok(crate::packs::InstallFlags {
                allow_unsigned: true,
                replace_shipped: true,
                self_test: false,
            })
        );
        assert_eq!(
            install_query(Some("self_test=1")),
            Ok(crate::packs::InstallFlags {
                self_test: true,
                ..Default::default()
            })
        );
        assert_eq!(install_query(None), Ok(Default::default()));
        assert!(install_query(Some("force=1"))
            .unwrap_err()
            .contains("force"));
        assert!(install_query(Some("allow_unsigned=maybe")).is_err());
        assert_eq!(
            r(Method::PUT, "/v1/bottles"),
            Err(NoRoute::Method("GET, POST"))
        );
        assert_eq!(
            r(Method::POST, "/v1/bottles/a1"),
            Err(NoRoute::Method("GET, DELETE"))
        );
        assert_eq!(
            r(Method::PUT, "/v1/bottles/a1/kill-switch"),
            Ok(Route::KillSwitch("a1".into()))
        );
        assert_eq!(
            r(Method::POST, "/v1/bottles/a1/kill-switch"),
            Err(NoRoute::Method("PUT"))
        );
        assert_eq!(
            r(Method::POST, "/v1/bottles/a1/reload"),
            Ok(Route::Reload("a1".into()))
        );
        assert_eq!(
            r(Method::GET, "/v1/bottles/a1/reload"),
            Err(NoRoute::Method("POST"))
        );
        assert_eq!(
            r(Method::GET, "/v1/bottles/a1/approvals"),
            Ok(Route::Approvals("a1".into()))
        );
        assert_eq!(
            r(Method::GET, "/v1/bottles/a1/approvals/x-1"),
            Ok(Route::Approval("a1".into(), "x-1".into()))
        );
        assert_eq!(
            r(Method::POST, "/v1/bottles/a1/approvals/x-1/deny"),
            Ok(Route::Decide("a1".into(), "x-1".into(), false))
        );
        assert_eq!(
            r(Method::GET, "/v1/bottles/a1/approvals/x-1/approve"),
            Err(NoRoute::Method("POST"))
        );
        assert_eq!(
            r(Method::POST, "/v1/bottles/a1/approvals/x-1/maybe"),
            Err(NoRoute::NotFound)
        );
        assert_eq!(approvals_query(Some("pending=1")), Ok(true));
        assert!(approvals_query(Some("all=1")).is_err());
        assert_eq!(r(Method::GET, "/v1/bottles/"), Err(NoRoute::NotFound));
        assert_eq!(r(Method::GET, "/v1/bottle"), Err(NoRoute::NotFound));
        assert_eq!(
            r(Method::GET, "/v1/bottles/a1/packs/"),
            Err(NoRoute::NotFound)
        );
    }

    #[test]
    fn logs_query_parses_and_names_bad_parameters() {
        assert_eq!(logs_query(None), Ok(LogsQuery::default()));
        assert_eq!(
            logs_query(Some("daemon=pack-exec&tail=20&follow=1")),
            Ok(LogsQuery {
                daemon: Some("pack-exec".into()),
                tail: Some(20),
                follow: true
            })
        );
        assert!(logs_query(Some("tail=x")).unwrap_err().starts_with("tail:"));
        assert!(logs_query(Some("daemon=a%20b"))
            .unwrap_err()
            .starts_with("daemon:"));
        assert!(logs_query(Some("since=1")).unwrap_err().contains("since"));
        assert!(logs_query(Some("follow=maybe"))
            .unwrap_err()
            .starts_with("follow:"));
    }
}
