//! Where the bridge may fetch a user's file from.
//!
//! Attachment URLs come from the bot side, which is untrusted input: fetched blindly, a URL
//! could make the bridge read its own cloud metadata service or an internal admin page and
//! hand the bytes to an agent (server-side request forgery). So a fetch is allowed only when
//! every hop (the URL and each redirect) passes the [`AttachmentPolicy`], and, unless private
//! addresses are allowed, the host name resolves to public addresses only: the check is made
//! on the addresses actually connected to, so a name that resolves to `127.0.0.1` (or changes
//! its answer between check and use) is refused too.

use std::time::Duration;

use handover_egress::{EgressPolicy, Refused};
use reqwest::Url;

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

impl From<Refused> for AttachmentRefused {
    fn from(refused: Refused) -> Self {
        match refused {
            Refused::Scheme(scheme) => Self::Scheme(scheme),
            Refused::Invalid => Self::Invalid,
            Refused::HostNotAllowed(host) => Self::HostNotAllowed(host),
            Refused::PrivateAddress(host) => Self::PrivateAddress(host),
        }
    }
}

impl AttachmentPolicy {
    /// Checks one hop: scheme, allow-list, and an address literal's range. Names are checked
    /// for their addresses when they are resolved.
    pub fn check(&self, url: &Url) -> Result<(), AttachmentRefused> {
        self.egress().check(url).map_err(AttachmentRefused::from)
    }

    fn egress(&self) -> EgressPolicy {
        EgressPolicy {
            allowed_hosts: self.allowed_hosts.clone(),
            allow_private_addresses: self.allow_private_addresses,
            trust_listed_hosts: false,
        }
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
            builder = builder.dns_resolver(self.egress().resolver(false));
        }
        builder.build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> Url {
        Url::parse(text).unwrap()
    }

    /// The rules themselves are `handover-egress`'s (tested there); here, what the attachment
    /// policy makes of them.
    #[test]
    fn a_listed_address_is_not_trusted_and_a_refusal_names_the_attachment_host() {
        let production = AttachmentPolicy {
            allowed_hosts: vec!["*.cognigy.ai".to_owned(), "10.0.0.7".to_owned()],
            ..AttachmentPolicy::default()
        };
        assert_eq!(
            production.check(&url("https://files.cognigy.ai/a.png")),
            Ok(())
        );
        // Listing an address does not make a private one fetchable: that takes
        // `allow_private_addresses`.
        assert_eq!(
            production.check(&url("http://10.0.0.7/a.png")),
            Err(AttachmentRefused::PrivateAddress("10.0.0.7".to_owned()))
        );
        let sandbox = AttachmentPolicy {
            allow_private_addresses: true,
            ..AttachmentPolicy::default()
        };
        assert_eq!(sandbox.check(&url("http://127.0.0.1:9000/a.png")), Ok(()));
        let refused = production
            .check(&url("https://evil.example/x?signature=SECRET"))
            .unwrap_err()
            .to_string();
        assert_eq!(
            refused,
            "the attachment host evil.example is not on the allow-list"
        );
    }
}
