//! Where the bridge may fetch a user's file from.
//!
//! Attachment URLs come from the bot side, which is untrusted input: fetched blindly, a URL
//! could make the bridge read its own cloud metadata service or an internal admin page and
//! hand the bytes to an agent (server-side request forgery). So a fetch is allowed only when
//! every hop (the URL and each redirect) passes the [`AttachmentPolicy`], and, unless private
//! addresses are allowed, the host name resolves to public addresses only: the check is made
//! on the addresses actually connected to, so a name that resolves to `127.0.0.1` (or changes
//! its answer between check and use) is refused too.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// The rules for fetching attachments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttachmentPolicy {
    /// Hosts files may come from: exact names (`files.example.com`) or a leading wildcard for
    /// subdomains (`*.cognigy.ai`, which does not match `cognigy.ai` itself). Empty: any host
    /// that passes the address rule.
    pub allowed_hosts: Vec<String>,
    /// Whether loopback, private, link-local and other non-public addresses may be fetched
    /// from. Off in production; on for local sandboxes and the demo.
    pub allow_private_addresses: bool,
    /// Redirects followed at most (each hop is checked like the first URL).
    pub max_redirects: usize,
}

impl Default for AttachmentPolicy {
    fn default() -> Self {
        Self {
            allowed_hosts: Vec::new(),
            allow_private_addresses: false,
            max_redirects: 3,
        }
    }
}

/// Why a URL may not be fetched. Names the host, never the path or query (they may carry a
/// signed token).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AttachmentRefused {
    /// Not http or https.
    #[error("attachment URLs must be http or https, not {0}")]
    Scheme(String),
    /// No host, or not a URL at all.
    #[error("the attachment URL is not a valid absolute URL")]
    Invalid,
    /// The host is not on the allow-list.
    #[error("the attachment host {0} is not on the allow-list")]
    HostNotAllowed(String),
    /// The host is, or resolves only to, a non-public address.
    #[error("the attachment host {0} is not a public address")]
    PrivateAddress(String),
    /// The redirects go on too long.
    #[error("the attachment URL redirects more than {0} times")]
    TooManyRedirects(usize),
}

impl AttachmentPolicy {
    /// Checks one hop: scheme, allow-list, and an address literal's range. Names are checked
    /// for their addresses when they are resolved.
    pub fn check(&self, url: &Url) -> Result<(), AttachmentRefused> {
        match url.scheme() {
            "http" | "https" => {}
            other => return Err(AttachmentRefused::Scheme(other.to_owned())),
        }
        let host = url.host_str().ok_or(AttachmentRefused::Invalid)?;
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if !self.allowed_hosts.is_empty()
            && !self
                .allowed_hosts
                .iter()
                .any(|pattern| host_matches(pattern, bare))
        {
            return Err(AttachmentRefused::HostNotAllowed(bare.to_owned()));
        }
        if !self.allow_private_addresses
            && let Ok(ip) = bare.parse::<IpAddr>()
            && !is_public(ip)
        {
            return Err(AttachmentRefused::PrivateAddress(bare.to_owned()));
        }
        Ok(())
    }

    /// An HTTP client that applies the policy to every redirect and, unless private addresses
    /// are allowed, connects to public addresses only.
    pub(crate) fn client(&self, connect_timeout: Duration) -> reqwest::Result<reqwest::Client> {
        let policy = self.clone();
        let redirects = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() > policy.max_redirects {
                attempt.error(AttachmentRefused::TooManyRedirects(policy.max_redirects))
            } else if let Err(refused) = policy.check(attempt.url()) {
                attempt.error(refused)
            } else {
                attempt.follow()
            }
        });
        let mut builder = reqwest::Client::builder()
            .connect_timeout(connect_timeout)
            .redirect(redirects)
            .user_agent(concat!("handover-bridge/", env!("CARGO_PKG_VERSION")));
        if !self.allow_private_addresses {
            builder = builder.dns_resolver(Arc::new(PublicOnly));
        }
        builder.build()
    }
}

/// `*.example.com` matches any subdomain of example.com; anything else matches itself.
/// Case-insensitive, as host names are.
fn host_matches(pattern: &str, host: &str) -> bool {
    let pattern = pattern.trim().trim_end_matches('.').to_ascii_lowercase();
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    match pattern.strip_prefix("*.") {
        Some(suffix) => host
            .strip_suffix(suffix)
            .is_some_and(|rest| rest.ends_with('.') && rest.len() > 1),
        None => host == pattern,
    }
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

/// Resolves with the system resolver and keeps public addresses only.
#[derive(Debug)]
struct PublicOnly;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> = found
                .into_iter()
                .filter(|address| is_public(address.ip()))
                .collect();
            if public.is_empty() {
                let refused: Box<dyn std::error::Error + Send + Sync> =
                    Box::new(AttachmentRefused::PrivateAddress(host));
                return Err(refused);
            }
            let addrs: Addrs = Box::new(public.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
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
        let production = AttachmentPolicy {
            allowed_hosts: vec!["*.cognigy.ai".to_owned(), "203.0.113.7".to_owned()],
            ..AttachmentPolicy::default()
        };
        assert_eq!(
            production.check(&url("https://files.cognigy.ai/a.png")),
            Ok(())
        );
        assert_eq!(
            production.check(&url("file:///etc/passwd")),
            Err(AttachmentRefused::Scheme("file".to_owned()))
        );
        assert_eq!(
            production.check(&url("https://evil.example/a.png")),
            Err(AttachmentRefused::HostNotAllowed("evil.example".to_owned()))
        );
        // On the list, but a documentation address is not public.
        assert_eq!(
            production.check(&url("http://203.0.113.7/a.png")),
            Err(AttachmentRefused::PrivateAddress("203.0.113.7".to_owned()))
        );
        let open = AttachmentPolicy::default();
        assert_eq!(
            open.check(&url("http://169.254.169.254/latest/meta-data/")),
            Err(AttachmentRefused::PrivateAddress(
                "169.254.169.254".to_owned()
            ))
        );
        assert_eq!(
            open.check(&url("http://[::1]:8080/x")),
            Err(AttachmentRefused::PrivateAddress("::1".to_owned()))
        );
        let sandbox = AttachmentPolicy {
            allow_private_addresses: true,
            ..AttachmentPolicy::default()
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
}
