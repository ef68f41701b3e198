//! Identifiers. Random ones come from outside; the rest are derived deterministically.

use std::fmt;

use sha2::{Digest, Sha256};
use uuid::Uuid;

/// Why an identifier was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The value was empty.
    #[error("{kind} must not be empty")]
    Empty {
        /// Which identifier.
        kind: &'static str,
    },
    /// The value is longer than the bridge accepts.
    #[error("{kind} is longer than {max} characters")]
    TooLong {
        /// Which identifier.
        kind: &'static str,
        /// The limit.
        max: usize,
    },
    /// The value is not a lowercase, hyphenated UUID version 4 with the RFC 4122 variant,
    /// which Salesforce requires for conversation ids.
    #[error("{kind} must be a lowercase UUID v4, got {value:?}")]
    NotUuidV4 {
        /// Which identifier.
        kind: &'static str,
        /// The offending value (ids are not secret).
        value: String,
    },
}

fn parse_uuid_v4(kind: &'static str, value: &str) -> Result<Uuid, IdError> {
    let not_v4 = || IdError::NotUuidV4 {
        kind,
        value: value.chars().take(64).collect(),
    };
    let uuid = Uuid::try_parse(value).map_err(|_| not_v4())?;
    // Salesforce wants exactly the lowercase hyphenated form (miaw-api.md §1).
    let canonical = uuid.hyphenated().to_string();
    if canonical != value
        || uuid.get_version_num() != 4
        || uuid.get_variant() != uuid::Variant::RFC4122
    {
        return Err(not_v4());
    }
    Ok(uuid)
}

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        #[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize), serde(transparent))]
        pub struct $name(Uuid);

        impl $name {
            /// Builds a UUID v4 from 16 random bytes supplied by the caller (the core has no
            /// randomness of its own). The version and variant bits are set here.
            pub fn from_random_bytes(bytes: [u8; 16]) -> Self {
                Self(uuid::Builder::from_random_bytes(bytes).into_uuid())
            }

            /// Parses a lowercase, hyphenated UUID v4.
            pub fn parse(value: &str) -> Result<Self, IdError> {
                parse_uuid_v4($kind, value).map(Self)
            }

            /// The UUID.
            pub fn as_uuid(&self) -> &Uuid {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0.hyphenated(), f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0.hyphenated())
            }
        }
    };
}

uuid_id!(
    /// The MIAW conversation id: a lowercase UUID v4 chosen by the client (us).
    ConversationId,
    "conversation id"
);
uuid_id!(
    /// The bridge's id for one handover.
    HandoverId,
    "handover id"
);

/// A client-generated id the bridge sends to Salesforce: a message id, a file id, a typing or
/// acknowledgement entry id. Always derived deterministically from the conversation id and what
/// it identifies, so that a retry or a replay after a crash reuses the same id and Salesforce
/// never sees the same message twice.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(transparent)
)]
pub struct ClientEntryId(Uuid);

impl ClientEntryId {
    /// Derives an id from the conversation, a purpose tag and the parts that make it unique.
    ///
    /// The result is SHA-256 over length-prefixed inputs, cut to 128 bits and stamped as a
    /// UUID v4 (Salesforce validates client ids as UUIDs).
    pub fn derive(conversation: ConversationId, purpose: &str, parts: &[&[u8]]) -> Self {
        let mut hasher = Sha256::new();
        let mut feed = |bytes: &[u8]| {
            hasher.update((bytes.len() as u64).to_be_bytes());
            hasher.update(bytes);
        };
        feed(conversation.as_uuid().as_bytes());
        feed(purpose.as_bytes());
        for part in parts {
            feed(part);
        }
        let digest = hasher.finalize();
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        Self(uuid::Builder::from_random_bytes(bytes).into_uuid())
    }

    /// The UUID.
    pub fn as_uuid(&self) -> &Uuid {
        &self.0
    }
}

impl fmt::Display for ClientEntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

impl fmt::Debug for ClientEntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClientEntryId({})", self.0.hyphenated())
    }
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $max:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        #[cfg_attr(
            feature = "serde",
            derive(serde::Serialize, serde::Deserialize),
            serde(try_from = "String", into = "String")
        )]
        pub struct $name(String);

        impl TryFrom<String> for $name {
            type Error = IdError;

            fn try_from(value: String) -> Result<Self, IdError> {
                Self::new(value)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl $name {
            /// Accepts any non-empty value up to the length limit.
            pub fn new(value: impl Into<String>) -> Result<Self, IdError> {
                let value = value.into();
                if value.is_empty() {
                    return Err(IdError::Empty { kind: $kind });
                }
                if value.chars().count() > $max {
                    return Err(IdError::TooLong { kind: $kind, max: $max });
                }
                Ok(Self(value))
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }
    };
}

string_id!(
    /// Salesforce's identifier of a conversation entry (`conversationEntry.identifier`). The
    /// same entry can arrive on the stream, in a stream replay and in a backfill; this is the
    /// key that de-duplicates them.
    EntryId,
    "entry identifier",
    256
);
string_id!(
    /// An SSE event id, sent back as `Last-Event-Id` on reconnect. Opaque.
    EventId,
    "event id",
    256
);
string_id!(
    /// The caller's id for a start request; a repeated request with the same id is the same
    /// handover (scenario S07).
    RequestId,
    "request id",
    128
);
string_id!(
    /// The bot platform's id for a user message. Outbound Salesforce message ids derive from
    /// it, and a repeated message with the same id is sent once.
    BotMessageId,
    "bot message id",
    128
);

/// Correlates a command with the input that reports its result. Unique within a session,
/// never reused (a retry is a new call with the same idempotency ids inside).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(transparent)
)]
pub struct CallId(u64);

impl CallId {
    /// Rebuilds a call id (for example from a stored outbox row).
    pub const fn from_raw(raw: u64) -> Self {
        Self(raw)
    }

    /// The raw number.
    pub const fn as_raw(self) -> u64 {
        self.0
    }
}

impl fmt::Display for CallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

impl fmt::Debug for CallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CallId({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversation_ids_must_be_lowercase_v4() {
        let id = ConversationId::from_random_bytes([0xAB; 16]);
        let text = id.to_string();
        assert_eq!(ConversationId::parse(&text), Ok(id));
        assert_eq!(&text[14..15], "4", "version nibble");
        assert!(matches!(
            ConversationId::parse(&text.to_uppercase()),
            Err(IdError::NotUuidV4 { .. })
        ));
        // A v1 UUID is refused, as Salesforce refuses it.
        assert!(ConversationId::parse("6fa459ea-ee8a-11ca-8000-000000000000").is_err());
        assert!(ConversationId::parse("not a uuid").is_err());
    }

    #[test]
    fn derived_ids_are_stable_distinct_and_v4() {
        let conversation = ConversationId::from_random_bytes([1; 16]);
        let other = ConversationId::from_random_bytes([2; 16]);
        let a = ClientEntryId::derive(conversation, "user", &[b"m1"]);
        assert_eq!(a, ClientEntryId::derive(conversation, "user", &[b"m1"]));
        assert_ne!(a, ClientEntryId::derive(conversation, "user", &[b"m2"]));
        assert_ne!(a, ClientEntryId::derive(other, "user", &[b"m1"]));
        assert_ne!(a, ClientEntryId::derive(conversation, "typing", &[b"m1"]));
        // Length prefixes keep ("ab", "c") and ("a", "bc") apart.
        assert_ne!(
            ClientEntryId::derive(conversation, "x", &[b"ab", b"c"]),
            ClientEntryId::derive(conversation, "x", &[b"a", b"bc"])
        );
        assert_eq!(a.as_uuid().get_version_num(), 4);
        assert_eq!(a.as_uuid().get_variant(), uuid::Variant::RFC4122);
    }

    #[test]
    fn string_ids_reject_empty_and_oversized_values() {
        assert_eq!(
            EntryId::new(""),
            Err(IdError::Empty {
                kind: "entry identifier"
            })
        );
        assert!(RequestId::new("r".repeat(129)).is_err());
        assert_eq!(
            BotMessageId::new("42").map(|id| id.to_string()),
            Ok("42".into())
        );
    }
}
