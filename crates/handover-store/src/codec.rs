//! What a store writes: serde JSON of the core's types, sealed with the keyring and bound to
//! the handover and the kind of value, so that no row holds a token in plain text and a
//! value cannot be moved to another row.

use handover_core::HandoverId;
use handover_core::ports::StoreError;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::crypto::Keyring;

/// What a sealed value is; part of its associated data.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Kind {
    Session,
    Address,
    Command,
    Input,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Session => "session",
            Self::Address => "address",
            Self::Command => "command",
            Self::Input => "input",
        }
    }
}

/// Seals and opens values.
#[derive(Clone, Debug)]
pub(crate) struct Codec {
    keys: Keyring,
}

impl Codec {
    pub(crate) fn new(keys: Keyring) -> Self {
        Self { keys }
    }

    fn aad(id: HandoverId, kind: Kind) -> Vec<u8> {
        format!("{}:{id}", kind.as_str()).into_bytes()
    }

    pub(crate) fn seal<T: Serialize>(
        &self,
        id: HandoverId,
        kind: Kind,
        value: &T,
    ) -> Result<Vec<u8>, StoreError> {
        let json = serde_json::to_vec(value).map_err(|error| {
            StoreError::Corrupt(format!(
                "a {} could not be written ({:?} error)",
                kind.as_str(),
                error.classify()
            ))
        })?;
        self.keys
            .seal(&Self::aad(id, kind), &json)
            .map_err(|error| {
                StoreError::Corrupt(format!("a {} could not be sealed: {error}", kind.as_str()))
            })
    }

    pub(crate) fn open<T: DeserializeOwned>(
        &self,
        id: HandoverId,
        kind: Kind,
        blob: &[u8],
    ) -> Result<T, StoreError> {
        let json = self
            .keys
            .open(&Self::aad(id, kind), blob)
            .map_err(|error| {
                StoreError::Corrupt(format!("the {} of handover {id} {error}", kind.as_str()))
            })?;
        // serde's message can quote the data (a token); say only where it broke.
        serde_json::from_slice(&json).map_err(|error| {
            StoreError::Corrupt(format!(
                "the {} of handover {id} is not readable by this version ({:?} error at line {} column {})",
                kind.as_str(),
                error.classify(),
                error.line(),
                error.column()
            ))
        })
    }
}
