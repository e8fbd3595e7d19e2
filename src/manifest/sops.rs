//! SOPS-encrypted manifests with age recipients, in the format Flux users commit: values
//! `ENC[AES256_GCM,data:...,iv:...,tag:...,type:...]`, a top-level `sops:` block holding the
//! data key encrypted for each age recipient, and a MAC over every value that is checked.
//!
//! A document is decrypted in place on its positioned tree, so findings about a decrypted
//! object still point at its lines. Each value is AES-256-GCM under the data key with a 32-byte
//! IV, its path (`stringData:password:`) as additional data; the MAC is SHA-512 over the values
//! in document order, upper-case hex, encrypted the same way with `lastmodified` as additional
//! data. Plaintext never leaves this module except as the tree the loader reads.

use super::yaml::{Node, Value, emit};
use crate::diag::Pos;
use aes_gcm::AesGcm;
use aes_gcm::aead::consts::U32;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::aes::Aes256;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use sha2::{Digest, Sha512};
use std::io::Read as _;
use std::path::Path;

/// SOPS' cipher: AES-256-GCM with a 32-byte nonce.
type Cipher = AesGcm<Aes256, U32>;

/// The `encrypted_regex` `berth secret encrypt` writes: a Secret's values, not its metadata.
pub const SECRET_VALUES_REGEX: &str = "^(data|stringData)$";

/// The age identities the server decrypts with.
pub struct Keys {
    identities: Vec<age::x25519::Identity>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keys({} age identities)", self.identities.len())
    }
}

impl Keys {
    /// Reads an age identity file (`age-keygen`'s output: `AGE-SECRET-KEY-1...` lines, `#`
    /// comments).
    pub fn parse(text: &str) -> Result<Keys, String> {
        let mut identities = Vec::new();
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let identity = line
                .parse::<age::x25519::Identity>()
                .map_err(|_| format!("line {} is not an age identity (AGE-SECRET-KEY-1...)", number + 1))?;
            identities.push(identity);
        }
        if identities.is_empty() {
            return Err("it holds no age identity; make one with `age-keygen -o FILE`".into());
        }
        Ok(Keys { identities })
    }

    /// Reads the identity file at `path`, which only its owner may read.
    pub fn read(path: &Path) -> Result<Keys, String> {
        let shown = path.display();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode =
                std::fs::metadata(path).map_err(|e| format!("the age key file {shown}: {e}"))?.permissions().mode();
            if mode & 0o077 != 0 {
                return Err(format!(
                    "the age key file {shown} may be read by others (mode {:o}); run `chmod 600 {shown}`",
                    mode & 0o777
                ));
            }
        }
        let text = std::fs::read_to_string(path).map_err(|e| format!("the age key file {shown}: {e}"))?;
        Keys::parse(&text).map_err(|e| format!("the age key file {shown}: {e}"))
    }

    /// The public recipients of these identities.
    pub fn recipients(&self) -> Vec<String> {
        self.identities.iter().map(|i| i.to_public().to_string()).collect()
    }
}

/// Why a document does not decrypt, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SopsError {
    pub pos: Pos,
    pub message: String,
    pub help: Option<String>,
}

impl SopsError {
    fn new(pos: Pos, message: impl Into<String>) -> SopsError {
        SopsError { pos, message: message.into(), help: None }
    }

    fn help(mut self, help: impl Into<String>) -> SopsError {
        self.help = Some(help.into());
        self
    }
}

/// Whether a document is SOPS-encrypted: it has a top-level `sops` mapping with a `mac`.
pub fn is_encrypted(root: &Node) -> bool {
    root.get("sops").is_some_and(|sops| sops.get("mac").is_some())
}

/// Which values the `sops` block says are encrypted.
struct Rules {
    unencrypted_suffix: Option<String>,
    encrypted_suffix: Option<String>,
    unencrypted_regex: Option<regex::Regex>,
    encrypted_regex: Option<regex::Regex>,
}

impl Rules {
    fn read(sops: &Node) -> Result<Rules, SopsError> {
        let text = |key: &str| sops.get(key).and_then(Node::as_str).filter(|s| !s.is_empty()).map(str::to_owned);
        let regex = |key: &str| -> Result<Option<regex::Regex>, SopsError> {
            text(key)
                .map(|r| {
                    regex::Regex::new(&r).map_err(|e| {
                        SopsError::new(sops.locate(&[key]), format!("sops.{key} is not a regular expression: {e}"))
                    })
                })
                .transpose()
        };
        for unsupported in ["unencrypted_comment_regex", "encrypted_comment_regex"] {
            if text(unsupported).is_some() {
                return Err(SopsError::new(
                    sops.locate(&[unsupported]),
                    format!("sops.{unsupported} is not supported by berth"),
                )
                .help("encrypt by key (encrypted_regex, or the default) instead of by comment"));
            }
        }
        if sops.get("mac_only_encrypted").is_some_and(|v| v.value == Value::Bool(true)) {
            return Err(SopsError::new(
                sops.locate(&["mac_only_encrypted"]),
                "sops.mac_only_encrypted is not supported by berth",
            )
            .help("encrypt the file again without --mac-only-encrypted"));
        }
        Ok(Rules {
            unencrypted_suffix: text("unencrypted_suffix"),
            encrypted_suffix: text("encrypted_suffix"),
            unencrypted_regex: regex("unencrypted_regex")?,
            encrypted_regex: regex("encrypted_regex")?,
        })
    }

    /// SOPS' rule: encrypted unless a key on the path says otherwise.
    fn encrypts(&self, path: &[String]) -> bool {
        let mut encrypted = true;
        if let Some(suffix) = &self.unencrypted_suffix {
            if path.iter().any(|k| k.ends_with(suffix.as_str())) {
                encrypted = false;
            }
        }
        if let Some(suffix) = &self.encrypted_suffix {
            encrypted = path.iter().any(|k| k.ends_with(suffix.as_str()));
        }
        if let Some(regex) = &self.unencrypted_regex {
            if path.iter().any(|k| regex.is_match(k)) {
                encrypted = false;
            }
        }
        if let Some(regex) = &self.encrypted_regex {
            encrypted = path.iter().any(|k| regex.is_match(k));
        }
        encrypted
    }
}

/// What a leaf becomes in the MAC, as SOPS writes it.
fn mac_bytes(value: &Value) -> Option<String> {
    match value {
        Value::Str(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        Value::Float(f) => Some(format!("{f}")),
        Value::Bool(b) => Some(if *b { "True" } else { "False" }.to_owned()),
        Value::Null => Some(String::new()),
        Value::Seq(_) | Value::Map(_) => None,
    }
}

/// One `ENC[AES256_GCM,...]` value.
struct Sealed {
    data: Vec<u8>,
    iv: Vec<u8>,
    tag: Vec<u8>,
    kind: String,
}

fn parse_sealed(text: &str) -> Option<Sealed> {
    let inner = text.strip_prefix("ENC[AES256_GCM,")?.strip_suffix(']')?;
    let (mut data, mut iv, mut tag, mut kind) = (None, None, None, None);
    for part in inner.split(',') {
        let (name, value) = part.split_once(':')?;
        match name {
            "data" => data = Some(BASE64.decode(value).ok()?),
            "iv" => iv = Some(BASE64.decode(value).ok()?),
            "tag" => tag = Some(BASE64.decode(value).ok()?),
            "type" => kind = Some(value.to_owned()),
            _ => return None,
        }
    }
    let iv = iv.filter(|iv| iv.len() == 32)?;
    let tag = tag.filter(|t| t.len() == 16)?;
    Some(Sealed { data: data?, iv, tag, kind: kind? })
}

fn open(key: &[u8; 32], sealed: &Sealed, aad: &str) -> Option<Vec<u8>> {
    let cipher = Cipher::new(key.into());
    let mut message = sealed.data.clone();
    message.extend_from_slice(&sealed.tag);
    cipher.decrypt(aes_gcm::Nonce::<U32>::from_slice(&sealed.iv), Payload { msg: &message, aad: aad.as_bytes() }).ok()
}

fn seal(key: &[u8; 32], plaintext: &[u8], aad: &str, kind: &str) -> String {
    let cipher = Cipher::new(key.into());
    let iv: [u8; 32] = rand::random();
    let mut sealed = cipher
        .encrypt(aes_gcm::Nonce::<U32>::from_slice(&iv), Payload { msg: plaintext, aad: aad.as_bytes() })
        .expect("AES-GCM encrypts any message of this size");
    let tag = sealed.split_off(sealed.len() - 16);
    format!(
        "ENC[AES256_GCM,data:{},iv:{},tag:{},type:{kind}]",
        BASE64.encode(&sealed),
        BASE64.encode(iv),
        BASE64.encode(tag)
    )
}

/// The value a decrypted leaf of `kind` holds.
fn typed(kind: &str, text: String) -> Option<Value> {
    Some(match kind {
        "str" | "bytes" => Value::Str(text),
        "int" => Value::Int(text.parse().ok()?),
        "float" => Value::Float(text.parse().ok()?),
        "bool" => Value::Bool(match text.as_str() {
            "True" | "true" | "TRUE" | "1" | "t" | "T" => true,
            "False" | "false" | "FALSE" | "0" | "f" | "F" => false,
            _ => return None,
        }),
        _ => return None,
    })
}

/// The data key, from the first age stanza one of `keys` opens.
fn data_key(sops: &Node, keys: Option<&Keys>) -> Result<[u8; 32], SopsError> {
    let stanzas: Vec<(&str, &str)> = match sops.get("age").map(|a| &a.value) {
        Some(Value::Seq(items)) => items
            .iter()
            .filter_map(|item| Some((item.get("recipient")?.as_str()?, item.get("enc")?.as_str()?)))
            .collect(),
        _ => Vec::new(),
    };
    if stanzas.is_empty() {
        return Err(SopsError::new(sops.pos, "it is SOPS-encrypted, but not for an age recipient")
            .help("berth decrypts with age only: `sops updatekeys` with an age recipient in .sops.yaml"));
    }
    let recipients = stanzas.iter().map(|(r, _)| *r).collect::<Vec<_>>().join(", ");
    let Some(keys) = keys else {
        return Err(SopsError::new(sops.pos, "no age identity is configured to decrypt it").help(format!(
            "pass --age-key-file (or set SOPS_AGE_KEY_FILE) with the identity of one of: {recipients}"
        )));
    };
    for (_, enc) in &stanzas {
        let Ok(decryptor) = age::Decryptor::new_buffered(age::armor::ArmoredReader::new(enc.as_bytes())) else {
            continue;
        };
        let identities = keys.identities.iter().map(|i| i as &dyn age::Identity);
        if let Ok(mut reader) = decryptor.decrypt(identities) {
            let mut key = Vec::new();
            if reader.read_to_end(&mut key).is_ok() {
                if let Ok(key) = <[u8; 32]>::try_from(key.as_slice()) {
                    return Ok(key);
                }
            }
        }
    }
    Err(SopsError::new(sops.pos, "no matching age identity")
        .help(format!("it is encrypted for {recipients}; pass --age-key-file with the identity of one of them")))
}

/// What is done to each leaf, with its key path.
type OnLeaf<'a> = dyn FnMut(&mut Node, &[String]) -> Result<(), SopsError> + 'a;

/// Walks the leaves in document order with their key paths (a list's items share its path).
fn walk_leaves(node: &mut Node, path: &mut Vec<String>, each: &mut OnLeaf<'_>) -> Result<(), SopsError> {
    match &mut node.value {
        Value::Map(entries) => {
            for (key, value) in entries.iter_mut() {
                let name = match &key.value {
                    Value::Str(s) => s.clone(),
                    other => mac_bytes(other).unwrap_or_default(),
                };
                path.push(name);
                walk_leaves(value, path, each)?;
                path.pop();
            }
            Ok(())
        }
        Value::Seq(items) => {
            for item in items.iter_mut() {
                walk_leaves(item, path, each)?;
            }
            Ok(())
        }
        _ => each(node, path),
    }
}

/// What a decryption found: the key paths of the values it decrypted (`stringData.password`).
#[derive(Debug, Default)]
pub struct Decrypted {
    pub paths: Vec<String>,
}

/// Decrypts a SOPS document in place and removes its `sops` block; the MAC must match.
pub fn decrypt(root: &mut Node, keys: Option<&Keys>) -> Result<Decrypted, SopsError> {
    let Value::Map(entries) = &mut root.value else {
        return Err(SopsError::new(root.pos, "a SOPS document must be a mapping"));
    };
    let at = entries.iter().position(|(k, _)| k.as_str() == Some("sops")).expect("is_encrypted was checked");
    let (_, sops) = entries.remove(at);
    let rules = Rules::read(&sops)?;
    let key = data_key(&sops, keys)?;
    let mut hash = Sha512::new();
    let mut decrypted = Decrypted::default();
    walk_leaves(root, &mut Vec::new(), &mut |leaf, path| {
        if rules.encrypts(path) {
            let aad = format!("{}:", path.join(":"));
            let text = leaf.as_str().unwrap_or_default();
            let sealed = parse_sealed(text).ok_or_else(|| {
                SopsError::new(
                    leaf.pos,
                    format!("{} should be encrypted, but is not an ENC[AES256_GCM,...] value", path.join(".")),
                )
                .help("encrypt the file again with `berth secret encrypt` or sops")
            })?;
            let plain = open(&key, &sealed, &aad)
                .and_then(|bytes| String::from_utf8(bytes).ok())
                .and_then(|text| typed(&sealed.kind, text))
                .ok_or_else(|| {
                    SopsError::new(
                        leaf.pos,
                        format!("{} does not decrypt: it was changed, moved or made with another key", path.join(".")),
                    )
                })?;
            leaf.value = plain;
            decrypted.paths.push(path.join("."));
        }
        if let Some(bytes) = mac_bytes(&leaf.value) {
            hash.update(bytes.as_bytes());
        }
        Ok(())
    })?;
    let mac_node = sops.get("mac").expect("is_encrypted was checked");
    let last_modified = sops.get("lastmodified").and_then(Node::as_str).unwrap_or_default();
    let stored = mac_node
        .as_str()
        .and_then(parse_sealed)
        .and_then(|sealed| open(&key, &sealed, last_modified))
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or_else(|| SopsError::new(mac_node.pos, "the MAC does not decrypt: the sops block was changed"))?;
    let computed = hex::encode_upper(hash.finalize());
    if !bool::from(subtle::ConstantTimeEq::ct_eq(stored.as_bytes(), computed.as_bytes())) {
        return Err(SopsError::new(mac_node.pos, "the MAC does not match: a value was changed without sops")
            .help("encrypt the file again from its plaintext; an edited ENC value or a changed unencrypted value breaks the MAC"));
    }
    Ok(decrypted)
}

/// Decrypts a document of a manifest file in place: [`decrypt`], and then only a Secret's
/// `data` and `stringData` may have been encrypted.
pub fn decrypt_manifest(root: &mut Node, keys: Option<&Keys>) -> Result<(), SopsError> {
    let decrypted = decrypt(root, keys)?;
    let kind = root.get("kind").and_then(Node::as_str).unwrap_or_default();
    match decrypted.paths.iter().find(|path| !may_be_encrypted(kind, path, &[])) {
        None => Ok(()),
        Some(path) => {
            let segments: Vec<&str> = path.split('.').collect();
            Err(SopsError::new(root.locate(&segments), format!("{path} is encrypted, but only a Secret's data and stringData may be"))
                .help("keep other values in plain text (encrypt with encrypted_regex: ^(data|stringData)$, as `berth secret encrypt` does)"))
        }
    }
}

/// Whether the value at `path` (`stringData.password`) of a `kind` may be encrypted: a
/// Secret's `data` and `stringData`, and what `also` allows (`berth.yaml`'s
/// `secrets.encryptedFields`, as `KIND.FIELD`).
pub fn may_be_encrypted(kind: &str, path: &str, also: &[String]) -> bool {
    let under = |field: &str| path == field || path.strip_prefix(field).is_some_and(|rest| rest.starts_with('.'));
    (kind == "Secret" && (under("data") || under("stringData")))
        || also.iter().any(|allowed| allowed.split_once('.').is_some_and(|(k, field)| k == kind && under(field)))
}

/// Encrypts a plain document in place for `recipients` (age public keys): the values whose
/// key path `encrypted_regex` matches are sealed, and a `sops` block is added. `now` is the
/// `lastmodified` time (RFC 3339, UTC).
pub fn encrypt(root: &mut Node, recipients: &[String], encrypted_regex: &str, now: &str) -> Result<(), String> {
    if recipients.is_empty() {
        return Err("no age recipient to encrypt for: list them under secrets.ageRecipients in berth.yaml".into());
    }
    let parsed: Vec<age::x25519::Recipient> = recipients
        .iter()
        .map(|r| r.parse().map_err(|e| format!("`{r}` is not an age recipient: {e}")))
        .collect::<Result<_, _>>()?;
    if is_encrypted(root) {
        return Err("it is encrypted already".into());
    }
    if !matches!(root.value, Value::Map(_)) {
        return Err("only a mapping can be encrypted".into());
    }
    let regex = regex::Regex::new(encrypted_regex).map_err(|e| e.to_string())?;
    let rules = Rules {
        unencrypted_suffix: None,
        encrypted_suffix: None,
        unencrypted_regex: None,
        encrypted_regex: Some(regex),
    };
    let key: [u8; 32] = rand::random();
    let mut hash = Sha512::new();
    walk_leaves(root, &mut Vec::new(), &mut |leaf, path| {
        let Some(bytes) = mac_bytes(&leaf.value) else { return Ok(()) };
        hash.update(bytes.as_bytes());
        if rules.encrypts(path) {
            let kind = match leaf.value {
                Value::Int(_) => "int",
                Value::Float(_) => "float",
                Value::Bool(_) => "bool",
                _ => "str",
            };
            leaf.value = Value::Str(seal(&key, bytes.as_bytes(), &format!("{}:", path.join(":")), kind));
        }
        Ok(())
    })
    .map_err(|e| e.message)?;
    let mac = seal(&key, hex::encode_upper(hash.finalize()).as_bytes(), now, "str");
    let mut stanzas = Vec::new();
    for (text, recipient) in recipients.iter().zip(&parsed) {
        let enc = age::encrypt_and_armor(recipient, &key).map_err(|e| format!("encrypting for {text}: {e}"))?;
        stanzas.push(node(Value::Map(vec![(string("recipient"), string(text)), (string("enc"), string(&enc))])));
    }
    let block = Value::Map(vec![
        (string("age"), node(Value::Seq(stanzas))),
        (string("lastmodified"), string(now)),
        (string("mac"), string(&mac)),
        (string("encrypted_regex"), string(encrypted_regex)),
        (string("version"), string("3.9.0")),
    ]);
    if let Value::Map(entries) = &mut root.value {
        entries.push((string("sops"), node(block)));
    }
    Ok(())
}

/// `berth secret encrypt`: every Secret document of a file's text sealed for `recipients`,
/// other documents left as they are. Comments and quoting styles are not kept.
pub fn encrypt_text(text: &str, recipients: &[String], now: &str) -> Result<String, String> {
    let documents = super::yaml::parse(text).map_err(|e| format!("line {}: {}", e.pos.line, e.message))?;
    let mut out = Vec::new();
    let mut secrets = 0;
    for document in documents {
        let Some(mut root) = document.root else { continue };
        if root.get("kind").and_then(Node::as_str) == Some("Secret") && !is_encrypted(&root) {
            encrypt(&mut root, recipients, SECRET_VALUES_REGEX, now)?;
            secrets += 1;
        }
        out.push(emit(&root));
    }
    if secrets == 0 {
        return Err(
            "it holds no Secret that is not encrypted already; only Secrets' data and stringData are encrypted".into(),
        );
    }
    Ok(out.join("---\n"))
}

/// `berth secret edit`: the file's text with its SOPS documents decrypted, and the recipients
/// they were encrypted for.
pub fn decrypt_text(text: &str, keys: &Keys) -> Result<(String, Vec<String>), String> {
    let documents = super::yaml::parse(text).map_err(|e| format!("line {}: {}", e.pos.line, e.message))?;
    let mut out = Vec::new();
    let mut recipients = Vec::new();
    for document in documents {
        let Some(mut root) = document.root else { continue };
        if is_encrypted(&root) {
            if let Some(Value::Seq(stanzas)) = root.get("sops").and_then(|s| s.get("age")).map(|a| &a.value) {
                for recipient in stanzas.iter().filter_map(|s| s.get("recipient")?.as_str()) {
                    if !recipients.iter().any(|r| r == recipient) {
                        recipients.push(recipient.to_owned());
                    }
                }
            }
            decrypt(&mut root, Some(keys)).map_err(|e| format!("line {}: {}", e.pos.line, e.message))?;
        }
        out.push(emit(&root));
    }
    Ok((out.join("---\n"), recipients))
}

fn node(value: Value) -> Node {
    Node { pos: Pos::START, value }
}

fn string(text: &str) -> Node {
    node(Value::Str(text.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The age identity of SOPS' own age tests (`age/keysource_test.go`, mockIdentity), and
    /// the data key it encrypted there (mockEncryptedKey decrypts to "data").
    const SOPS_TEST_IDENTITY: &str = "AGE-SECRET-KEY-1G0Q5K9TV4REQ3ZSQRMTMG8NSWQGYT0T7TZ33RAZEE0GZYVZN0APSU24RK7";
    const SOPS_TEST_ENCRYPTED: &str = "-----BEGIN AGE ENCRYPTED FILE-----
YWdlLWVuY3J5cHRpb24ub3JnL3YxCi0+IFgyNTUxOSBvY2t2NkdLUGRvY3l2OGNy
MVJWcUhCOEZrUG8yeCtnRnhxL0I5NFk4YjJFCmE4SVQ3MEdyZkFqRWpSa2F0NVhF
VDUybzBxdS9nSGpHSVRVMUI0UEVqZkkKLS0tIGJjeGhNQ0Y5L2VZRVVYSm90djFF
bzdnQ3UwTGljMmtrbWNMV1MxYkFzUFUK4xjOZOTGdcbzuwUY/zeBXhcF+Md3e5PQ
EylloI7MNGbadPGb
-----END AGE ENCRYPTED FILE-----";

    #[test]
    fn sops_age_test_vector_decrypts_with_its_identity() {
        let keys = Keys::parse(SOPS_TEST_IDENTITY).unwrap();
        let decryptor =
            age::Decryptor::new_buffered(age::armor::ArmoredReader::new(SOPS_TEST_ENCRYPTED.as_bytes())).unwrap();
        let mut reader = decryptor.decrypt(keys.identities.iter().map(|i| i as &dyn age::Identity)).unwrap();
        let mut plain = String::new();
        reader.read_to_string(&mut plain).unwrap();
        assert_eq!(plain, "data");
        assert_eq!(keys.recipients(), ["age1lzd99uklcjnc0e7d860axevet2cz99ce9pq6tzuzd05l5nr28ams36nvun"]);
    }

    fn parse(text: &str) -> Node {
        crate::manifest::yaml::parse(text).unwrap().remove(0).root.unwrap()
    }

    #[test]
    fn encrypting_and_decrypting_round_trips_every_kind_of_value() {
        let identity = age::x25519::Identity::generate();
        let recipient = identity.to_public().to_string();
        let text = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\nstringData:\n  password: \"hunter2: yes\"\n  port: 5432\n  ratio: 0.5\n  on: true\n  list: [a, b]\n";
        let plain = parse(text);
        let mut sealed = plain.clone();
        encrypt(&mut sealed, std::slice::from_ref(&recipient), SECRET_VALUES_REGEX, "2026-12-05T10:00:00Z").unwrap();
        let written = emit(&sealed);
        assert!(
            !written.contains("hunter2") && written.contains("name: db") && written.contains("ENC[AES256_GCM,"),
            "{written}"
        );
        let mut read = parse(&written);
        let keys = Keys { identities: vec![identity] };
        let found = decrypt(&mut read, Some(&keys)).unwrap();
        assert_eq!(
            found.paths,
            [
                "stringData.password",
                "stringData.port",
                "stringData.ratio",
                "stringData.on",
                "stringData.list",
                "stringData.list"
            ]
        );
        let strip = |n: &Node| emit(n);
        assert_eq!(strip(&read), strip(&plain));

        // Another identity: no matching age identity, and none at all says how to give one.
        let other = Keys { identities: vec![age::x25519::Identity::generate()] };
        let error = decrypt(&mut parse(&written), Some(&other)).unwrap_err();
        assert!(error.message.contains("no matching age identity") && error.help.unwrap().contains(&recipient));
        assert!(decrypt(&mut parse(&written), None).unwrap_err().message.contains("no age identity is configured"));
        // An unencrypted value changed by hand breaks the MAC.
        let tampered = written.replace("name: db", "name: other");
        let error = decrypt(&mut parse(&tampered), Some(&keys)).unwrap_err();
        assert!(error.message.contains("MAC does not match"), "{error:?}");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
        /// Any one byte of an encrypted file changed: it never panics, and it never decrypts to
        /// a value other than the one sealed (the change is refused, or was in a part that
        /// carries no meaning, such as a base64 padding or the version).
        #[test]
        fn a_changed_byte_is_refused_or_harmless(at in 0usize..10_000, byte in proptest::prelude::any::<u8>()) {
            let identity = age::x25519::Identity::generate();
            let text = "kind: Secret\nmetadata: {name: a}\nstringData:\n  password: s3cret\n  port: \"5432\"\n";
            let sealed = encrypt_text(text, &[identity.to_public().to_string()], "2026-12-05T10:00:00Z").unwrap();
            let mut bytes = sealed.into_bytes();
            let at = at % bytes.len();
            bytes[at] = byte;
            let Ok(changed) = String::from_utf8(bytes) else { return Ok(()) };
            let keys = Keys { identities: vec![identity] };
            let Ok(documents) = crate::manifest::yaml::parse(&changed) else { return Ok(()) };
            for document in documents {
                let Some(mut root) = document.root else { continue };
                if !is_encrypted(&root) {
                    continue;
                }
                if decrypt(&mut root, Some(&keys)).is_ok() {
                    let values = root.get("stringData").map(emit).unwrap_or_default();
                    proptest::prop_assert!(
                        values == "password: s3cret\nport: \"5432\"\n",
                        "decrypted to something else: {values}"
                    );
                }
            }
        }
    }

    #[test]
    fn hostile_sops_blocks_fail_with_a_message_and_never_panic() {
        let keys = Keys::parse(SOPS_TEST_IDENTITY).unwrap();
        for text in [
            "a: b\nsops: {mac: x}\n",
            "a: b\nsops: {mac: x, age: [{recipient: r, enc: nonsense}]}\n",
            "a: ENC[AES256_GCM,data:%%%]\nsops: {mac: x, age: []}\n",
            "a: b\nsops: {mac: x, encrypted_regex: '(', age: [{recipient: r, enc: e}]}\n",
        ] {
            let mut root = parse(text);
            assert!(is_encrypted(&root));
            assert!(decrypt(&mut root, Some(&keys)).is_err(), "{text}");
        }
    }
}
