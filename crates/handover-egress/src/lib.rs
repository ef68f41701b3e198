//! Where the bridge may send requests.
//!
//! Some URLs the bridge calls come from the bot side, which is untrusted: a user's file to
//! fetch, the Cognigy Endpoint to deliver to. Called blindly, such a URL could make the
//! bridge reach its own cloud metadata service or an internal admin port (server-side request
//! forgery). An [`EgressPolicy`] decides which hosts may be called and whether they may be
//! on non-public addresses; [`EgressPolicy::resolver`] applies the address rule to the
//! addresses actually connected to, so a name that resolves to `127.0.0.1` (or changes its
//! answer between a check and the connection) is refused too.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Which hosts may be called, and on which addresses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EgressPolicy {
    /// Hosts that may be called: exact names or addresses (`files.example.com`,
    /// `10.0.0.5`), or a leading wildcard for subdomains (`*.cognigy.ai`, which does not
    /// match `cognigy.ai` itself). Empty: any host that passes the address rule.
    pub allowed_hosts: Vec<String>,
    /// Whether any host may be on a loopback, private, link-local or otherwise non-public
    /// address. Off in production; on for local sandboxes.
    pub allow_private_addresses: bool,
    /// Whether a host named exactly in `allowed_hosts` (not through a wildcard) may be on a
    /// non-public address: an operator who lists `cognigy.internal` means it.
    pub trust_listed_hosts: bool,
}

/// Why a URL may not be called. Names the host, never the path or query (they may carry a
/// signed token).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// Not http or https.
    #[error("the URL must be http or https, not {0}")]
    Scheme(String),
    /// No host, or not a URL at all.
    #[error("the URL is not a valid absolute URL")]
    Invalid,
    /// The host is not on the allow-list.
    #[error("the host {0} is not on the allow-list")]
    HostNotAllowed(String),
    /// The host is, or resolves to, a non-public address.
    #[error("the host {0} is not a public address")]
    PrivateAddress(String),
}

impl EgressPolicy {
    /// Checks a URL: scheme, allow-list, and an address literal's range. Names are checked
    /// for their addresses when they are resolved ([`Self::resolve_checked`], or the client
    /// built with [`Self::resolver`]).
    pub fn check(&self, url: &Url) -> Result<(), Refused> {
        match url.scheme() {
            "http" | "https" => {}
            other => return Err(Refused::Scheme(other.to_owned())),
        }
        let host = bare_host(url)?;
        if !self.allowed_hosts.is_empty()
            && !self
                .allowed_hosts
                .iter()
                .any(|pattern| host_matches(pattern, host))
        {
            return Err(Refused::HostNotAllowed(host.to_owned()));
        }
        if let Ok(ip) = host.parse::<IpAddr>()
            && !is_public(ip)
            && !self.may_be_private(host)
        {
            return Err(Refused::PrivateAddress(host.to_owned()));
        }
        Ok(())
    }

    /// Checks a URL and, for a host name, its addresses now: every one must be public unless
    /// the host may be private. For answering a request at once (the connection is checked
    /// again when it is made).
    pub async fn resolve_checked(&self, url: &Url) -> Result<(), Refused> {
        self.check(url)?;
        let host = bare_host(url)?;
        if host.parse::<IpAddr>().is_ok() || self.may_be_private(host) {
            return Ok(());
        }
        let port = url.port_or_known_default().unwrap_or(443);
        let found: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|_| Refused::Invalid)?
            .collect();
        if found.is_empty() || found.iter().any(|address| !is_public(address.ip())) {
            return Err(Refused::PrivateAddress(host.to_owned()));
        }
        Ok(())
    }

    /// Whether `host` may be on a non-public address.
    fn may_be_private(&self, host: &str) -> bool {
        self.allow_private_addresses
            || (self.trust_listed_hosts
                && self
                    .allowed_hosts
                    .iter()
                    .any(|pattern| !pattern.starts_with("*.") && host_matches(pattern, host)))
    }

    /// A resolver for an HTTP client that connects only where the policy allows: names that
    /// may not be private resolve to public addresses only; with `strict`, a name with any
    /// non-public address is refused outright rather than narrowed to its public ones.
    pub fn resolver(&self, strict: bool) -> Arc<PolicyResolver> {
        Arc::new(PolicyResolver {
            policy: self.clone(),
            strict,
        })
    }
}

fn bare_host(url: &Url) -> Result<&str, Refused> {
    let host = url.host_str().ok_or(Refused::Invalid)?;
    Ok(host.trim_start_matches('[').trim_end_matches(']'))
}

/// `*.example.com` matches any subdomain of example.com; anything else matches itself.
/// Case-insensitive, as host names are.
pub fn host_matches(pattern: &str, host: &str) -> bool {
    let pattern = pattern.trim().trim_end_matches('.').to_ascii_lowercase();
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    match pattern.strip_prefix("*.") {
        Some(suffix) => host
            .strip_suffix(suffix)
            .is_some_and(|rest| rest.ends_with('.') && rest.len() > 1),
        None => host == pattern,
    }
}

/// Whether `pattern` is a usable allow-list entry: a host name, an address, or `*.` and a
/// domain; no scheme, port or path.
pub fn is_host_pattern(pattern: &str) -> bool {
    let name = pattern.strip_prefix("*.").unwrap_or(pattern);
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
}

/// Whether an address is on the public internet: not loopback, private, link-local, shared
/// (CGNAT), unspecified, broadcast, multicast, documentation, benchmarking or reserved, and
/// the same for the IPv4 address inside a mapped or NAT64 IPv6 one.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240) // reserved
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    let segments = ip.segments();
    // NAT64 (64:ff9b::/96) carries an IPv4 address in its last 32 bits.
    if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let [.., hi, lo] = segments;
        let v4 = Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
        return is_public_v4(v4);
    }
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (segments[0] & 0xfe00) == 0xfc00 // unique local
        || (segments[0] & 0xffc0) == 0xfe80 // link-local
        || (segments[0] == 0x2001 && segments[1] == 0x0db8)) // documentation
}

/// Resolves with the system resolver and applies the policy's address rule (made by
/// [`EgressPolicy::resolver`]).
#[derive(Debug)]
pub struct PolicyResolver {
    policy: EgressPolicy,
    strict: bool,
}

impl Resolve for PolicyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        let may_be_private = self.policy.may_be_private(&host);
        let strict = self.strict;
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if may_be_private {
                let addrs: Addrs = Box::new(found.into_iter());
                return Ok(addrs);
            }
            let public: Vec<SocketAddr> = found
                .iter()
                .copied()
                .filter(|address| is_public(address.ip()))
                .collect();
            if public.is_empty() || (strict && public.len() != found.len()) {
                let refused: Box<dyn std::error::Error + Send + Sync> =
                    Box::new(Refused::PrivateAddress(host));
                return Err(refused);
            }
            let addrs: Addrs = Box::new(public.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn url(text: &str) -> Url {
        Url::parse(text).unwrap()
    }

    #[test]
    fn hosts_match_exactly_or_by_subdomain_wildcard() {
        assert!(host_matches("files.example.com", "FILES.example.com"));
        assert!(host_matches("*.cognigy.ai", "endpoint-trial.cognigy.ai"));
        assert!(host_matches("*.cognigy.ai", "a.b.cognigy.ai"));
        assert!(!host_matches("*.cognigy.ai", "cognigy.ai"));
        assert!(!host_matches("*.cognigy.ai", "evilcognigy.ai"));
        assert!(!host_matches("*.cognigy.ai", "cognigy.ai.evil.com"));
        assert!(!host_matches(
            "files.example.com",
            "files.example.com.evil.com"
        ));
        assert!(is_host_pattern("*.cognigy.ai") && is_host_pattern("10.0.0.5"));
        assert!(!is_host_pattern("https://x.example") && !is_host_pattern("x.example/a"));
    }

    #[test]
    fn non_public_addresses_are_recognised() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
        ] {
            let ip: IpAddr = private.parse().unwrap();
            assert!(!is_public(ip), "{private} is not public");
        }
        for public in [
            "8.8.8.8",
            "151.101.1.1",
            "2a00:1450:4001::1",
            "::ffff:8.8.8.8",
        ] {
            let ip: IpAddr = public.parse().unwrap();
            assert!(is_public(ip), "{public} is public");
        }
    }

    #[test]
    fn the_policy_checks_scheme_host_and_address_literals() {
        let production = EgressPolicy {
            allowed_hosts: vec!["*.cognigy.ai".to_owned(), "203.0.113.7".to_owned()],
            ..EgressPolicy::default()
        };
        assert_eq!(
            production.check(&url("https://files.cognigy.ai/a.png")),
            Ok(())
        );
        assert_eq!(
            production.check(&url("file:///etc/passwd")),
            Err(Refused::Scheme("file".to_owned()))
        );
        assert_eq!(
            production.check(&url("https://evil.example/a.png")),
            Err(Refused::HostNotAllowed("evil.example".to_owned()))
        );
        // On the list, but a documentation address is not public.
        assert_eq!(
            production.check(&url("http://203.0.113.7/a.png")),
            Err(Refused::PrivateAddress("203.0.113.7".to_owned()))
        );
        // Unless hosts named exactly are trusted to be where they are.
        let trusting = EgressPolicy {
            trust_listed_hosts: true,
            ..production.clone()
        };
        assert_eq!(trusting.check(&url("http://203.0.113.7/a.png")), Ok(()));
        let open = EgressPolicy::default();
        for private in [
            "http://169.254.169.254/latest/meta-data/",
            "http://[::1]:8080/x",
            "http://10.0.0.1/",
            "http://127.0.0.1:9000/",
        ] {
            assert!(
                matches!(open.check(&url(private)), Err(Refused::PrivateAddress(_))),
                "{private}"
            );
        }
        let sandbox = EgressPolicy {
            allow_private_addresses: true,
            ..EgressPolicy::default()
        };
        assert_eq!(sandbox.check(&url("http://127.0.0.1:9000/a.png")), Ok(()));
        // The refusal names the host only, never the path or a signed query.
        let refused = open
            .check(&url("http://10.0.0.1/x?signature=SECRET"))
            .unwrap_err()
            .to_string();
        assert!(
            refused.contains("10.0.0.1") && !refused.contains("SECRET"),
            "{refused}"
        );
    }

    #[tokio::test]
    async fn a_name_that_resolves_to_a_private_address_is_refused_unless_listed_exactly() {
        let open = EgressPolicy::default();
        assert_eq!(
            open.resolve_checked(&url("http://localhost:9/x")).await,
            Err(Refused::PrivateAddress("localhost".to_owned()))
        );
        let wildcard = EgressPolicy {
            allowed_hosts: vec!["*.localhost".to_owned(), "localhost".to_owned()],
            trust_listed_hosts: true,
            ..EgressPolicy::default()
        };
        assert_eq!(
            wildcard.resolve_checked(&url("http://localhost:9/x")).await,
            Ok(())
        );
    }
}
