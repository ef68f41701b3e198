//! Encryption at rest: AES-256-GCM with key ids, so that keys rotate without re-encrypting.
//!
//! A sealed blob is `1 | len(key id) | key id | nonce (12) | ciphertext and tag`. The key id
//! says which key opens it; new writes use the current key, and older keys stay readable as
//! long as they are in the keyring. The associated data binds a blob to its row (handover id
//! and kind), so a blob copied into another row does not open.

use std::fmt;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

const FORMAT: u8 = 1;
const NONCE_LEN: usize = 12;

/// One key: an id and 32 bytes.
#[derive(Clone)]
struct KeyEntry {
    id: String,
    cipher: Aes256Gcm,
}

/// The keys of a store: the current one for writing, every one for reading.
#[derive(Clone)]
pub struct Keyring {
    current: KeyEntry,
    older: Vec<KeyEntry>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let older: Vec<&str> = self.older.iter().map(|k| k.id.as_str()).collect();
        f.debug_struct("Keyring")
            .field("current", &self.current.id)
            .field("older", &older)
            .finish_non_exhaustive()
    }
}

/// A key specification that cannot be used, and why. Never contains key material.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// No key was given.
    #[error("no encryption key is configured (HANDOVER_STORE_KEYS, `id:base64-of-32-bytes`)")]
    Missing,
    /// A key is not `id:base64`.
    #[error("encryption key #{index} is not of the form `id:base64-of-32-bytes`")]
    Malformed {
        /// Its position in the list, from 1.
        index: usize,
    },
    /// A key id is empty, too long, or not `[A-Za-z0-9_.-]`.
    #[error("encryption key #{index} has an invalid id (1 to 64 of A-Z a-z 0-9 _ . -)")]
    InvalidId {
        /// Its position in the list, from 1.
        index: usize,
    },
    /// A key is not 32 bytes of base64.
    #[error("encryption key {id:?} is not 32 bytes of base64")]
    WrongLength {
        /// Its id.
        id: String,
    },
    /// Two keys share an id.
    #[error("encryption key id {id:?} appears twice")]
    Duplicate {
        /// The id.
        id: String,
    },
}

/// Why a blob did not open.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// It is not a sealed blob of a known format.
    #[error("not a sealed value of a known format")]
    Format,
    /// Its key is not in the keyring.
    #[error("sealed with key {0:?}, which is not configured")]
    UnknownKey(String),
    /// The key is there but the blob does not open with it: a wrong key under that id, or
    /// tampered data.
    #[error("does not open with key {0:?}: wrong key material or tampered data")]
    Rejected(String),
}

impl Keyring {
    /// A keyring with one key.
    pub fn new(id: &str, key: [u8; 32]) -> Result<Self, KeyError> {
        Ok(Self {
            current: entry(1, id, key)?,
            older: Vec::new(),
        })
    }

    /// Adds a key that stays readable but is no longer written with.
    pub fn with_older(mut self, id: &str, key: [u8; 32]) -> Result<Self, KeyError> {
        let index = self.older.len() + 2;
        let added = entry(index, id, key)?;
        if self.current.id == added.id || self.older.iter().any(|k| k.id == added.id) {
            return Err(KeyError::Duplicate { id: added.id });
        }
        self.older.push(added);
        Ok(self)
    }

    /// Parses `id:base64,id:base64,…`: the first key is current, the others are older keys
    /// kept for reading.
    pub fn parse(spec: &str) -> Result<Self, KeyError> {
        let mut keys = spec
            .split(',')
            .map(str::trim)
            .filter(|part| !part.is_empty())
            .enumerate()
            .map(|(i, part)| {
                let index = i + 1;
                let (id, material) = part.split_once(':').ok_or(KeyError::Malformed { index })?;
                let bytes = STANDARD
                    .decode(material.trim())
                    .map_err(|_| KeyError::WrongLength { id: id.to_owned() })?;
                let key: [u8; 32] = bytes
                    .try_into()
                    .map_err(|_| KeyError::WrongLength { id: id.to_owned() })?;
                Ok((id.to_owned(), key))
            });
        let (id, key) = keys.next().ok_or(KeyError::Missing)??;
        let mut ring = Self::new(&id, key)?;
        for next in keys {
            let (id, key) = next?;
            ring = ring.with_older(&id, key)?;
        }
        Ok(ring)
    }

    /// A keyring with a fresh random key, for tests and the demo. Its data is unreadable
    /// once the process ends.
    pub fn ephemeral() -> Self {
        let mut key = [0u8; 32];
        // Without randomness there is nothing safe to do; the operating system always has it.
        #[allow(clippy::expect_used)]
        getrandom::fill(&mut key).expect("the operating system provides randomness");
        let current = KeyEntry {
            id: "ephemeral".to_owned(),
            cipher: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&key)),
        };
        Self {
            current,
            older: Vec::new(),
        }
    }

    /// The id new writes use.
    pub fn current_id(&self) -> &str {
        &self.current.id
    }

    /// Encrypts `plaintext`, bound to `aad`.
    pub(crate) fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, OpenError> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|_| OpenError::Format)?;
        let ciphertext = self
            .current
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .map_err(|_| OpenError::Rejected(self.current.id.clone()))?;
        let id = self.current.id.as_bytes();
        let mut blob = Vec::with_capacity(2 + id.len() + NONCE_LEN + ciphertext.len());
        blob.push(FORMAT);
        blob.push(u8::try_from(id.len()).map_err(|_| OpenError::Format)?);
        blob.extend_from_slice(id);
        blob.extend_from_slice(&nonce);
        blob.extend_from_slice(&ciphertext);
        Ok(blob)
    }

    /// Decrypts a blob sealed with any key of the ring and the same `aad`.
    pub(crate) fn open(&self, aad: &[u8], blob: &[u8]) -> Result<Vec<u8>, OpenError> {
        let [format, id_len, rest @ ..] = blob else {
            return Err(OpenError::Format);
        };
        if *format != FORMAT {
            return Err(OpenError::Format);
        }
        let id_len = usize::from(*id_len);
        if rest.len() < id_len + NONCE_LEN {
            return Err(OpenError::Format);
        }
        let (id, rest) = rest.split_at(id_len);
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let id = std::str::from_utf8(id).map_err(|_| OpenError::Format)?;
        let key = std::iter::once(&self.current)
            .chain(&self.older)
            .find(|k| k.id == id)
            .ok_or_else(|| OpenError::UnknownKey(id.to_owned()))?;
        key.cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad,
                },
            )
            .map_err(|_| OpenError::Rejected(id.to_owned()))
    }
}

fn entry(index: usize, id: &str, key: [u8; 32]) -> Result<KeyEntry, KeyError> {
    let valid = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if !valid {
        return Err(KeyError::InvalidId { index });
    }
    Ok(KeyEntry {
        id: id.to_owned(),
        cipher: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&key)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(id: &str, byte: u8) -> String {
        format!("{id}:{}", STANDARD.encode([byte; 32]))
    }

    #[test]
    fn a_sealed_value_opens_with_its_key_and_only_with_its_aad() {
        let ring = Keyring::parse(&spec("k1", 7)).unwrap();
        let blob = ring.seal(b"row-1", b"secret token").unwrap();
        assert!(!blob.windows(6).any(|w| w == b"secret"), "no plain text");
        assert_eq!(ring.open(b"row-1", &blob).unwrap(), b"secret token");
        assert_eq!(
            ring.open(b"row-2", &blob),
            Err(OpenError::Rejected("k1".to_owned()))
        );
        let mut tampered = blob.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(ring.open(b"row-1", &tampered).is_err());
        assert_eq!(ring.open(b"row-1", b"junk"), Err(OpenError::Format));
    }

    #[test]
    fn rotation_reads_old_keys_and_writes_the_new_one() {
        let old = Keyring::parse(&spec("k1", 1)).unwrap();
        let blob = old.seal(b"a", b"v").unwrap();
        let rotated = Keyring::parse(&format!("{},{}", spec("k2", 2), spec("k1", 1))).unwrap();
        assert_eq!(rotated.open(b"a", &blob).unwrap(), b"v");
        assert_eq!(rotated.current_id(), "k2");
        let fresh = rotated.seal(b"a", b"v").unwrap();
        assert_eq!(
            old.open(b"a", &fresh),
            Err(OpenError::UnknownKey("k2".to_owned()))
        );
        let wrong = Keyring::parse(&spec("k1", 9)).unwrap();
        assert_eq!(
            wrong.open(b"a", &blob),
            Err(OpenError::Rejected("k1".to_owned()))
        );
    }

    #[test]
    fn bad_key_specifications_are_refused_without_showing_the_key() {
        assert_eq!(Keyring::parse("").unwrap_err(), KeyError::Missing);
        assert_eq!(
            Keyring::parse("nocolon").unwrap_err(),
            KeyError::Malformed { index: 1 }
        );
        assert!(matches!(
            Keyring::parse("k1:c2hvcnQ="),
            Err(KeyError::WrongLength { .. })
        ));
        assert!(matches!(
            Keyring::parse(&spec("bad id", 1)),
            Err(KeyError::InvalidId { index: 1 })
        ));
        assert!(matches!(
            Keyring::parse(&format!("{},{}", spec("k1", 1), spec("k1", 2))),
            Err(KeyError::Duplicate { .. })
        ));
        let ring = Keyring::parse(&spec("k1", 3)).unwrap();
        assert!(!format!("{ring:?}").contains(&STANDARD.encode([3u8; 32])));
    }
}
