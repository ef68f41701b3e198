//! Secrets: Salesforce access tokens and customer identity tokens.
//!
//! Neither type implements `Display`, and their `Debug` output is redacted, so a secret cannot
//! reach a log line or an error message by accident. Reading the value takes an explicit
//! [`expose_secret`](AccessToken::expose_secret) call, which is easy to find in review.

use std::fmt;

macro_rules! secret {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        ///
        /// With the `serde` feature it serializes as the plain value, for encrypted storage.
        #[derive(Clone, PartialEq, Eq)]
        #[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize), serde(transparent))]
        pub struct $name(String);

        impl $name {
            /// Wraps a secret value.
            pub fn new(value: impl Into<String>) -> Self {
                Self(value.into())
            }

            /// The secret itself. Call this only where the value goes on the wire or into
            /// encrypted storage.
            pub fn expose_secret(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(concat!(stringify!($name), "(<redacted>)"))
            }
        }
    };
}

secret!(
    /// A Salesforce MIAW access token (a JWT used as a bearer token).
    AccessToken
);
secret!(
    /// A customer identity token (a JWT signed by the customer's identity provider) for the
    /// verified-user token flow.
    IdentityToken
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_the_secret() {
        let token = AccessToken::new("eyJhbGciOiJIUzI1NiJ9.secret-payload.sig");
        let identity = IdentityToken::new("identity-secret");
        let rendered = format!("{token:?} {identity:?} {:?}", Some(&token));
        assert!(!rendered.contains("secret"), "{rendered}");
        assert_eq!(
            token.expose_secret(),
            "eyJhbGciOiJIUzI1NiJ9.secret-payload.sig"
        );
    }
}
