//! Which web pages may connect: the `Origin` check of the upgrade request.
//!
//! A browser lets any web site open a WebSocket to `ws://localhost:9000`;
//! only the `Origin` header it adds tells the gateway which site's script
//! is asking. Without this check, any page the user visits could drive the
//! user's hardware through the bus.
//!
//! Accepted by default: pages opened from disk (`null`), pages served from
//! this machine, programs that send no `Origin`, and the few editors known
//! to be built for this gateway ([`KNOWN_EDITORS`]), so that the Scratch 3
//! OneGPIO editor works out of the box as it did with s3-extend's gateway.

/// Web origins accepted by default because they serve editors made to drive
/// this gateway: the Scratch 3 OneGPIO editor of s3-extend
/// (`https://mryslab.github.io/s3onegpio/`), whose extensions connect to
/// `ws://127.0.0.1:9000` to `9007`. `--no-default-origins` removes them.
pub const KNOWN_EDITORS: &[&str] = &["https://mryslab.github.io"];

/// The origin policy: pages opened from disk (`null`), localhost pages,
/// programs that send no `Origin`, the known editors when wanted, and the
/// listed extra origins.
#[derive(Clone, Debug, Default)]
pub struct OriginPolicy {
    extra: Vec<String>,
    any: bool,
}

impl OriginPolicy {
    /// This machine's pages and programs, the [`KNOWN_EDITORS`] when
    /// `known_editors`, and `extra` origins (`*` accepts every origin).
    pub fn new(extra: &[String], known_editors: bool) -> OriginPolicy {
        let editors = KNOWN_EDITORS
            .iter()
            .filter(|_| known_editors)
            .map(|o| (*o).to_owned());
        let extra: Vec<String> = editors.chain(extra.iter().map(|o| normalize(o))).collect();
        let any = extra.iter().any(|o| o == "*");
        OriginPolicy { extra, any }
    }

    /// The origins accepted beyond this machine's, as `new` was given them
    /// (normalized), the known editors first.
    pub fn extra(&self) -> &[String] {
        &self.extra
    }

    /// Whether a request with this `Origin` header (`None`: absent) is
    /// accepted. An origin that is not text (`Err`) is refused.
    pub fn allows(&self, origin: Option<Result<&str, ()>>) -> bool {
        let origin = match origin {
            None => return true,
            Some(Err(())) => return false,
            Some(Ok(origin)) => normalize(origin),
        };
        self.any || origin == "null" || is_localhost(&origin) || self.extra.contains(&origin)
    }
}

/// Origins compare case-insensitively; a trailing `/` is not part of one.
fn normalize(origin: &str) -> String {
    origin.trim().trim_end_matches('/').to_ascii_lowercase()
}

/// `http(s)://localhost`, `127.0.0.1` or `[::1]`, with or without a port.
fn is_localhost(origin: &str) -> bool {
    let Some(rest) = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
    else {
        return false;
    };
    let host = match rest.rsplit_once(':') {
        // "[::1]" has colons of its own: only a suffix after "]" is a port.
        Some((host, port))
            if !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit())
                && (!host.starts_with('[') || host.ends_with(']')) =>
        {
            host
        }
        _ => rest,
    };
    matches!(host, "localhost" | "127.0.0.1" | "[::1]")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allows(policy: &OriginPolicy, origin: &str) -> bool {
        policy.allows(Some(Ok(origin)))
    }

    #[test]
    fn default_accepts_local_pages_and_programs() {
        let p = OriginPolicy::new(&[], false);
        assert!(p.allows(None));
        for origin in [
            "null",
            "http://localhost",
            "http://localhost:8000",
            "https://LOCALHOST:8443/",
            "http://127.0.0.1:9000",
            "http://[::1]",
            "http://[::1]:8080",
        ] {
            assert!(allows(&p, origin), "{origin}");
        }
    }

    #[test]
    fn default_refuses_other_sites() {
        let p = OriginPolicy::new(&[], true);
        assert!(!p.allows(Some(Err(()))));
        for origin in [
            "http://evil.example",
            "http://localhost.evil.example",
            "http://evil.example:80@localhost",
            "http://127.0.0.1.evil.example",
            "http://localhost:80x",
            "file://",
            "ws://localhost",
            "",
            "http://mryslab.github.io",
            "https://mryslab.github.io.evil.example",
            "https://evil.mryslab.github.io",
            "https://mryslab.github.io:8443",
        ] {
            assert!(!allows(&p, origin), "{origin}");
        }
    }

    #[test]
    fn extra_origins_are_exact() {
        let p = OriginPolicy::new(&["https://Pages.example:8443/".into()], false);
        assert!(allows(&p, "https://pages.example:8443"));
        assert!(!allows(&p, "https://pages.example"));
        assert!(!allows(&p, "http://pages.example:8443"));
        let any = OriginPolicy::new(&["*".into()], false);
        assert!(allows(&any, "http://anything.example"));
    }

    #[test]
    fn the_onegpio_editor_is_known_unless_removed() {
        let known = OriginPolicy::new(&[], true);
        assert!(allows(&known, "https://mryslab.github.io"));
        assert!(allows(&known, "https://MrYsLab.github.io/"));
        assert_eq!(known.extra(), ["https://mryslab.github.io"]);
        let removed = OriginPolicy::new(&[], false);
        assert!(!allows(&removed, "https://mryslab.github.io"));
        assert!(removed.extra().is_empty());
        let listed = OriginPolicy::new(&["https://mryslab.github.io".into()], false);
        assert!(
            allows(&listed, "https://mryslab.github.io"),
            "-o brings it back"
        );
    }
}
