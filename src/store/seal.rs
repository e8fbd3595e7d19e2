//! Secret values at rest: what the store keeps that holds them (node assignments, with the
//! values pods read) is sealed with ChaCha20-Poly1305 under a key kept beside the database
//! (`store-key`, 0600) or given by `BERTH_STORE_KEY`, so a copied database alone reveals nothing.

use super::StoreError;
use base64::Engine;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use std::path::{Path, PathBuf};

/// The environment variable that gives the key (64 hex digits), over the file.
pub const KEY_VARIABLE: &str = "BERTH_STORE_KEY";
/// The key's file, in the database's folder.
pub const KEY_FILE: &str = "store-key";
/// What a sealed value starts with; anything else was written before sealing and is read as it is.
const PREFIX: &str = "sealed1:";

#[derive(Clone)]
pub struct Sealer {
    cipher: Option<ChaCha20Poly1305>,
    /// Where the key was looked for, for the error when it is missing.
    looked: PathBuf,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer").field("key", &self.cipher.is_some()).finish()
    }
}

impl Sealer {
    /// The key of the database at `db`: `BERTH_STORE_KEY`, else `store-key` beside it, made
    /// when `create` is set and there is none. Without either, values can be written by no one
    /// and sealed ones read by no one; the error says where the key was looked for.
    pub fn for_database(db: &Path, create: bool) -> Result<Sealer, StoreError> {
        let looked = db.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).join(KEY_FILE);
        let bad_key = |why: &str| StoreError::Key { path: looked.clone(), reason: why.to_owned() };
        let hex_key = match std::env::var(KEY_VARIABLE) {
            Ok(value) => Some(value),
            Err(_) => match std::fs::read_to_string(&looked) {
                Ok(text) => Some(text),
                Err(error) if error.kind() == std::io::ErrorKind::NotFound && create => {
                    let key = ChaCha20Poly1305::generate_key(&mut OsRng);
                    crate::private::write_private(&looked, hex::encode(key).as_bytes())
                        .map_err(|e| bad_key(&format!("writing it failed: {e}")))?;
                    tracing::info!(key = %looked.display(), "Made the key that seals secret values in the store; keep it with backups of the database, apart from them.");
                    Some(hex::encode(key))
                }
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
                Err(error) => return Err(bad_key(&format!("reading it failed: {error}"))),
            },
        };
        let cipher = match hex_key {
            None => None,
            Some(text) => {
                let bytes = hex::decode(text.trim()).map_err(|_| bad_key("it is not 64 hex digits"))?;
                let key: [u8; 32] = bytes.try_into().map_err(|_| bad_key("it is not 64 hex digits"))?;
                crate::private::private_file(&looked).map_err(|e| bad_key(&format!("tightening it failed: {e}")))?;
                Some(ChaCha20Poly1305::new(Key::from_slice(&key)))
            }
        };
        Ok(Sealer { cipher, looked })
    }

    fn cipher(&self) -> Result<&ChaCha20Poly1305, StoreError> {
        self.cipher.as_ref().ok_or_else(|| StoreError::Key {
            path: self.looked.clone(),
            reason: format!("it is missing and {KEY_VARIABLE} is not set"),
        })
    }

    pub fn seal(&self, plain: &str) -> Result<String, StoreError> {
        let cipher = self.cipher()?;
        let nonce = ChaCha20Poly1305::generate_nonce(&mut OsRng);
        let sealed = cipher
            .encrypt(&nonce, plain.as_bytes())
            .map_err(|_| StoreError::Key { path: self.looked.clone(), reason: "sealing a value failed".into() })?;
        let mut bytes = nonce.to_vec();
        bytes.extend(sealed);
        Ok(format!("{PREFIX}{}", base64::engine::general_purpose::STANDARD.encode(bytes)))
    }

    pub fn unseal(&self, text: &str) -> Result<String, StoreError> {
        let Some(encoded) = text.strip_prefix(PREFIX) else { return Ok(text.to_owned()) };
        let cipher = self.cipher()?;
        let wrong = || StoreError::Key {
            path: self.looked.clone(),
            reason: "it does not open what the store sealed: it is another database's key".into(),
        };
        let bytes = base64::engine::general_purpose::STANDARD.decode(encoded).map_err(|_| wrong())?;
        if bytes.len() < 12 {
            return Err(wrong());
        }
        let (nonce, sealed) = bytes.split_at(12);
        let plain = cipher.decrypt(Nonce::from_slice(nonce), sealed).map_err(|_| wrong())?;
        String::from_utf8(plain).map_err(|_| wrong())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_their_key() {
        let scratch = tempfile::tempdir().unwrap();
        let db = scratch.path().join("berth.db");
        let sealer = Sealer::for_database(&db, true).unwrap();
        let sealed = sealer.seal("password=hunter2").unwrap();
        assert!(sealed.starts_with(PREFIX) && !sealed.contains("hunter2"), "{sealed}");
        assert_eq!(sealer.unseal(&sealed).unwrap(), "password=hunter2");
        assert_eq!(sealer.unseal("[]").unwrap(), "[]", "a value from before sealing reads as it is");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(scratch.path().join(KEY_FILE)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // The same key is found again; another folder's is another key, and no key is an error.
        assert_eq!(Sealer::for_database(&db, false).unwrap().unseal(&sealed).unwrap(), "password=hunter2");
        let other = tempfile::tempdir().unwrap();
        let elsewhere = Sealer::for_database(&other.path().join("berth.db"), true).unwrap();
        assert!(elsewhere.unseal(&sealed).unwrap_err().to_string().contains("another database's key"));
        let keyless = tempfile::tempdir().unwrap();
        let none = Sealer::for_database(&keyless.path().join("berth.db"), false).unwrap();
        let error = none.unseal(&sealed).unwrap_err().to_string();
        assert!(error.contains("store-key") && error.contains(KEY_VARIABLE), "{error}");
    }
}
