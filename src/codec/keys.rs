//! The key file (docs/contract.md, TRIGGER_RELAY_CODEC_KEYS_FILE): one key per line,
//! `<key id>=<base64 of 32 bytes>`; blank lines and lines starting with `#` are skipped. The
//! Python worker reads the same file (trigger_relay/codec.py, same rules). Keys live in files,
//! never in flags, which `ps` shows; errors name the file and the line, never a key.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::{EncryptionCodec, KEY_BYTES, Keys, valid_key_id};
use crate::config::CodecConfig;

pub(crate) const KEYS_FILE: &str = "TRIGGER_RELAY_CODEC_KEYS_FILE";
pub(crate) const CURRENT_KEY_ID: &str = "TRIGGER_RELAY_CODEC_CURRENT_KEY_ID";

/// `pub`, unlike the rest of the codec: the public `error::Error` carries it (through
/// `TemporalError::Codec`).
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("cannot read {KEYS_FILE} {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{KEYS_FILE} {path}, line {line}: {problem}")]
    Line {
        path: PathBuf,
        line: usize,
        problem: String,
    },
    #[error("{KEYS_FILE} {path} holds no key (lines `<key id>=<base64 of 32 bytes>`)")]
    Empty { path: PathBuf },
    #[error("{CURRENT_KEY_ID}={id:?} names no key of {KEYS_FILE} {path} (its key ids: {known})")]
    NoSuchCurrent {
        id: String,
        path: PathBuf,
        known: String,
    },
    #[error(
        "{KEYS_FILE} is set but {CURRENT_KEY_ID} is not: name the key that encrypts (the others \
         only decrypt)"
    )]
    NoCurrent,
    #[error("{CURRENT_KEY_ID} is set but {KEYS_FILE} is not: there is no key to encrypt with")]
    NoFile,
}

impl CodecConfig {
    /// The codec these settings describe: None when neither is set (payloads travel as JSON,
    /// as before); an error for a half-configured or malformed pair, so that the daemon
    /// refuses to start rather than send in the clear what it was told to encrypt.
    pub(crate) fn load(&self) -> Result<Option<Arc<EncryptionCodec>>, KeyFileError> {
        let current = self
            .codec_current_key_id
            .as_deref()
            .map(str::trim)
            .filter(|id| !id.is_empty());
        let (path, current) = match (&self.codec_keys_file, current) {
            (None, None) => return Ok(None),
            (Some(_), None) => return Err(KeyFileError::NoCurrent),
            (None, Some(_)) => return Err(KeyFileError::NoFile),
            (Some(path), Some(current)) => (path, current),
        };
        let keys = read(path)?;
        let known = keys
            .iter()
            .map(|(id, _)| id.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        EncryptionCodec::new(keys, current)
            .map(|codec| Some(Arc::new(codec)))
            .ok_or_else(|| KeyFileError::NoSuchCurrent {
                id: current.to_owned(),
                path: path.clone(),
                known,
            })
    }
}

/// The keys of the file at `path`, in file order.
pub(crate) fn read(path: &Path) -> Result<Keys, KeyFileError> {
    let bytes = std::fs::read(path).map_err(|source| KeyFileError::Read {
        path: path.to_owned(),
        source,
    })?;
    let text = String::from_utf8(bytes).map_err(|_| KeyFileError::Line {
        path: path.to_owned(),
        line: 1,
        problem: "the file is not UTF-8 text".into(),
    })?;
    let keys = parse(&text).map_err(|(line, problem)| KeyFileError::Line {
        path: path.to_owned(),
        line,
        problem,
    })?;
    if keys.is_empty() {
        return Err(KeyFileError::Empty {
            path: path.to_owned(),
        });
    }
    Ok(keys)
}

/// The keys of a key file's text; an error is (line number, what is wrong with it). A line
/// that does not parse is never quoted: it may be a key pasted without its id (a key's
/// base64 padding is an `=` too), so only an id that parsed, before a key that decoded, is
/// named.
pub(crate) fn parse(text: &str) -> Result<Keys, (usize, String)> {
    let mut keys: Keys = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let not_a_key_line = || (number, "not `<key id>=<base64 of 32 bytes>`".to_owned());
        let (id, encoded) = line.split_once('=').ok_or_else(not_a_key_line)?;
        let (id, encoded) = (id.trim(), encoded.trim());
        if encoded.trim_matches('=').is_empty() {
            return Err(not_a_key_line());
        }
        if !valid_key_id(id) {
            return Err((
                number,
                "the key id is not 1 to 64 letters, digits, '.', '_' or '-' (it is stored, \
                 unencrypted, in every payload)"
                    .to_owned(),
            ));
        }
        let key = STANDARD.decode(encoded).map_err(|_| {
            (
                number,
                "the key is not base64 (generate one with `openssl rand -base64 32`)".to_owned(),
            )
        })?;
        if keys.iter().any(|(seen, _)| seen == id) {
            return Err((number, format!("key id {id:?} appears twice")));
        }
        let key: [u8; KEY_BYTES] = key.as_slice().try_into().map_err(|_| {
            (
                number,
                format!(
                    "the key of {id:?} is {} bytes; AES-256-GCM takes 32 (generate one with \
                     `openssl rand -base64 32`)",
                    key.len()
                ),
            )
        })?;
        keys.push((id.to_owned(), key));
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="; // 32 × 0x01

    fn config(file: Option<&Path>, current: Option<&str>) -> CodecConfig {
        CodecConfig {
            codec_keys_file: file.map(Path::to_owned),
            codec_current_key_id: current.map(str::to_owned),
        }
    }

    #[test]
    fn a_key_file_is_parsed() {
        let text = format!("# rotated 2026-11\n\n 2026-05 = {A}\n2026-11={A}\n");
        let keys = parse(&text).expect("valid");
        assert_eq!(
            keys.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>(),
            ["2026-05", "2026-11"]
        );
        assert_eq!(keys[0].1, [1u8; 32]);
    }

    #[test]
    fn malformed_lines_are_named_without_the_key() {
        let short = "AQEBAQEBAQEBAQEBAQEBAQ=="; // 16 bytes
        for (text, line, expected) in [
            (
                "just-a-key".to_owned(),
                1,
                "not `<key id>=<base64 of 32 bytes>`".to_owned(),
            ),
            // A key pasted without its id: its padding is no separator.
            (A.to_owned(), 1, "not `<key id>=".to_owned()),
            (short.to_owned(), 1, "not `<key id>=".to_owned()),
            (
                format!("a b={A}"),
                1,
                "the key id is not 1 to 64".to_owned(),
            ),
            (
                format!("a={A}\na={A}"),
                2,
                "key id \"a\" appears twice".to_owned(),
            ),
            (
                "# c\na=not base64!".to_owned(),
                2,
                "the key is not base64".to_owned(),
            ),
            (
                format!("a={short}"),
                1,
                "the key of \"a\" is 16 bytes; AES-256-GCM takes 32".into(),
            ),
        ] {
            let (at, problem) = parse(&text).expect_err(&text);
            assert_eq!(at, line, "{text}");
            assert!(problem.contains(&expected), "{problem}");
            assert!(
                !problem.contains(short) && !problem.contains(A),
                "{problem}"
            );
        }
    }

    #[test]
    fn settings_are_refused_half_set_or_pointing_at_no_key() {
        let dir = std::env::temp_dir().join(format!("trigger-relay-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("keys");
        std::fs::write(&file, format!("a={A}\n")).expect("write");
        assert!(config(None, None).load().expect("off").is_none());
        let codec = config(Some(&file), Some("a"))
            .load()
            .expect("on")
            .expect("codec");
        assert_eq!(codec.current_key_id(), "a");
        let err = |file, current| {
            config(file, current)
                .load()
                .expect_err("refused")
                .to_string()
        };
        assert!(err(Some(&file), None).contains("TRIGGER_RELAY_CODEC_CURRENT_KEY_ID is not"));
        assert!(err(None, Some("a")).contains("TRIGGER_RELAY_CODEC_KEYS_FILE is not"));
        assert!(
            err(Some(&file), Some("b")).contains("=\"b\" names no key of")
                && err(Some(&file), Some("b")).contains("(its key ids: a)")
        );
        let missing = dir.join("missing");
        assert!(err(Some(&missing), Some("a")).contains("cannot read"));
        std::fs::write(&file, "# nothing yet\n").expect("write");
        assert!(err(Some(&file), Some("a")).contains("holds no key"));
        std::fs::remove_dir_all(&dir).ok();
    }
}
