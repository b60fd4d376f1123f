//! Egress allowlists: which hosts a sandbox with an `allowlist` network may reach through the
//! node's egress proxy. Pure: parsing and matching only; the scheduler's proxy does the I/O.
//!
//! A pattern is a host name (`api.example.com`: that host only), a wildcard
//! (`*.example.com`: every subdomain of `example.com`, not `example.com` itself), or an IP
//! literal (`203.0.113.7`, `[2001:db8::1]`: that address only; a wildcard never matches an
//! address). Any of them may end in `:port` to allow that port only. Names compare
//! case-insensitively and a trailing dot is ignored.

use crate::error::{Error, Result};
use std::net::IpAddr;

/// The most patterns one allowlist may hold.
pub const MAX_HOSTS: usize = 256;

/// One allowlist entry, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    /// What the host must be.
    host: PatternHost,
    /// The only port allowed; `None`: any.
    port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PatternHost {
    /// This name exactly (lowercase, no trailing dot).
    Exact(String),
    /// Any name ending in `.` + this suffix (lowercase, no trailing dot).
    Subdomains(String),
    /// This address exactly.
    Address(IpAddr),
}

/// A request's destination as the proxy saw it: a name or an address, and a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// A host name, lowercase, without a trailing dot.
    Name(String),
    /// An IP literal.
    Address(IpAddr),
}

/// Splits `host[:port]` (`[v6]:port` for IPv6) into a host and an optional port.
fn split_port(s: &str) -> Result<(&str, Option<u16>)> {
    let bad = || Error::invalid(format!("{s:?} is not a host, host:port or [address]:port"));
    if let Some(rest) = s.strip_prefix('[') {
        let (addr, after) = rest.split_once(']').ok_or_else(bad)?;
        return match after {
            "" => Ok((addr, None)),
            p => {
                let p = p.strip_prefix(':').ok_or_else(bad)?;
                Ok((addr, Some(parse_port(p).ok_or_else(bad)?)))
            }
        };
    }
    match s.rsplit_once(':') {
        // A bare IPv6 address has several colons and no port.
        Some((h, _)) if h.contains(':') => Ok((s, None)),
        Some((h, p)) => Ok((h, Some(parse_port(p).ok_or_else(bad)?))),
        None => Ok((s, None)),
    }
}

fn parse_port(p: &str) -> Option<u16> {
    p.parse::<u16>().ok().filter(|p| *p != 0)
}

/// A host name as compared: lowercase, trailing dot dropped; `None` when it is not a name
/// (empty labels, characters other than letters, digits, `-` and `_`, or too long).
fn normalize_name(name: &str) -> Option<String> {
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        });
    ok.then_some(name)
}

/// Parses a request's `host[:port]` (a CONNECT authority or a URL's host) into its
/// destination and port, `default_port` when it names none. `InvalidInput` when it is neither
/// a name nor an address.
pub fn parse_destination(authority: &str, default_port: u16) -> Result<(Destination, u16)> {
    let (host, port) = split_port(authority)?;
    let port = port.unwrap_or(default_port);
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok((Destination::Address(ip), port));
    }
    match normalize_name(host) {
        Some(n) => Ok((Destination::Name(n), port)),
        None => Err(Error::invalid(format!("{host:?} is not a host name"))),
    }
}

impl HostPattern {
    /// Parses one allowlist entry; `InvalidInput` naming it when it is none of the forms.
    pub fn parse(pattern: &str) -> Result<HostPattern> {
        let bad = |why: &str| {
            Error::invalid(format!(
                "allowlist host {pattern:?} {why}; use a name (api.example.com), a wildcard (*.example.com), or an IP address, optionally with :port"
            ))
        };
        let (host, port) = split_port(pattern.trim()).map_err(|_| bad("has a bad port"))?;
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(HostPattern {
                host: PatternHost::Address(ip),
                port,
            });
        }
        let host = match host.strip_prefix("*.") {
            Some(suffix) => {
                let s = normalize_name(suffix).ok_or_else(|| bad("is not a wildcard of a name"))?;
                if !s.contains('.') {
                    return Err(bad(
                        "would allow a whole top-level domain; name at least two labels",
                    ));
                }
                PatternHost::Subdomains(s)
            }
            None => {
                PatternHost::Exact(normalize_name(host).ok_or_else(|| bad("is not a host name"))?)
            }
        };
        Ok(HostPattern { host, port })
    }

    /// Whether a request to `dest` on `port` is allowed by this entry.
    pub fn matches(&self, dest: &Destination, port: u16) -> bool {
        if self.port.is_some_and(|p| p != port) {
            return false;
        }
        match (&self.host, dest) {
            (PatternHost::Exact(p), Destination::Name(n)) => p == n,
            (PatternHost::Subdomains(s), Destination::Name(n)) => n
                .strip_suffix(s.as_str())
                .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
            (PatternHost::Address(a), Destination::Address(b)) => a == b,
            _ => false,
        }
    }
}

/// A parsed allowlist.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allowlist {
    patterns: Vec<HostPattern>,
}

impl Allowlist {
    /// Parses every entry of a template's list, refusing the first bad one (and lists longer
    /// than [`MAX_HOSTS`]).
    pub fn parse(hosts: &[String]) -> Result<Allowlist> {
        if hosts.len() > MAX_HOSTS {
            return Err(Error::invalid(format!(
                "an allowlist holds at most {MAX_HOSTS} hosts, not {}",
                hosts.len()
            )));
        }
        let patterns = hosts
            .iter()
            .map(|h| HostPattern::parse(h))
            .collect::<Result<_>>()?;
        Ok(Allowlist { patterns })
    }

    /// Whether any entry allows `dest` on `port`.
    pub fn allows(&self, dest: &Destination, port: u16) -> bool {
        self.patterns.iter().any(|p| p.matches(dest, port))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allows(list: &[&str], authority: &str) -> bool {
        let l = Allowlist::parse(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        let (d, p) = parse_destination(authority, 80).unwrap();
        l.allows(&d, p)
    }

    #[test]
    fn exact_names_match_themselves_only_ignoring_case_and_a_trailing_dot() {
        let l = ["api.example.com"];
        assert!(allows(&l, "api.example.com"));
        assert!(allows(&l, "API.Example.COM."));
        assert!(allows(&l, "api.example.com:8443"));
        assert!(!allows(&l, "example.com"));
        assert!(!allows(&l, "x.api.example.com"));
        assert!(!allows(&l, "api.example.com.evil.org"));
        assert!(!allows(&l, "evilapi.example.com"));
        assert!(allows(&["API.example.com."], "api.example.com"));
    }

    #[test]
    fn wildcards_match_subdomains_only() {
        let l = ["*.example.com"];
        assert!(allows(&l, "a.example.com"));
        assert!(allows(&l, "a.b.Example.com."));
        assert!(!allows(&l, "example.com"));
        assert!(!allows(&l, "badexample.com"));
        assert!(!allows(&l, "a.example.com.evil.org"));
        assert!(!allows(&l, "93.184.216.34"));
    }

    #[test]
    fn ports_restrict_when_given() {
        let l = ["api.example.com:443"];
        assert!(allows(&l, "api.example.com:443"));
        assert!(!allows(&l, "api.example.com"), "port 80 by default");
        assert!(!allows(&l, "api.example.com:80"));
    }

    #[test]
    fn addresses_match_only_their_literal() {
        assert!(!allows(&["api.example.com"], "203.0.113.7"));
        assert!(allows(&["203.0.113.7"], "203.0.113.7:8080"));
        assert!(!allows(&["203.0.113.7"], "203.0.113.8"));
        assert!(allows(&["[2001:db8::1]:443"], "[2001:db8::1]:443"));
        assert!(allows(&["2001:db8::1"], "[2001:db8::1]"));
        assert!(!allows(&["2001:db8::1"], "[2001:db8::2]"));
    }

    #[test]
    fn bad_patterns_and_destinations_are_refused() {
        for bad in [
            "",
            "*",
            "*.com",
            "a..b",
            "a b",
            "*.*.x.com",
            "x.com:0",
            "x.com:99999",
            "[::1",
            "http://x.com",
        ] {
            assert!(HostPattern::parse(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(Allowlist::parse(&vec!["a.com".to_string(); MAX_HOSTS + 1]).is_err());
        assert!(parse_destination("a b", 80).is_err());
        assert!(parse_destination("x.com:", 80).is_err());
        assert_eq!(
            parse_destination("X.com.", 80).unwrap(),
            (Destination::Name("x.com".into()), 80)
        );
    }
}
