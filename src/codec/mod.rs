//! Payload encryption (docs/operations.md, "Encrypting payloads"): every payload the daemon
//! sends to Temporal (the workflow input with the firing's context, the memo, activity inputs
//! and results, the workflow's result, failure messages) is encrypted with AES-256-GCM before
//! it leaves the process, and decrypted when it comes back.
//!
//! The format is the one of Temporal's encryption samples (samples-go and samples-python
//! `encryption`), so that Temporal's tools and the Python worker (trigger_relay/codec.py) read
//! it: the encrypted payload's metadata is `encoding: binary/encrypted` and
//! `encryption-key-id: <id>`, its data the 12-byte nonce, then the ciphertext and the 16-byte
//! tag of the original payload serialized as a `temporal.api.common.v1.Payload` proto.
//!
//! Key rotation: every configured key decrypts (chosen by the payload's key id), the current
//! one encrypts. A payload without `binary/encrypted` passes through undecoded: histories of
//! firings started before encryption was turned on still replay and perform.
//!
//! The SDK applies the codec (its `PayloadCodec` in the client's `DataConverter`) to what the
//! client sends (the start's input and memo) and to everything the hosted worker receives and
//! completes; search attributes and the workflow's summary are not payloads it encodes, which
//! is what TRIGGER_RELAY_VISIBILITY_PERSONAL_DATA is about (src/search_attributes.rs).

pub(crate) mod keys;
pub(crate) mod server;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;
use prost::Message;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use temporalio_common::data_converters::{
    DataConverter, DefaultFailureConverter, PayloadCodec, PayloadConversionError, PayloadConverter,
    SerializationContextData,
};
use temporalio_common::protos::temporal::api::common::v1::Payload;

/// Metadata key of a payload's encoding (Temporal's own).
pub(crate) const ENCODING: &str = "encoding";
/// The encoding of an encrypted payload.
pub(crate) const ENCRYPTED: &[u8] = b"binary/encrypted";
/// Metadata key naming the key that encrypted a payload.
pub const KEY_ID: &str = "encryption-key-id";
/// AES-256: keys are 32 bytes.
pub(crate) const KEY_BYTES: usize = 32;
/// GCM's tag, after the ciphertext.
const TAG_BYTES: usize = 16;

#[derive(Debug, thiserror::Error)]
pub(crate) enum CodecError {
    #[error(
        "a payload is encrypted with key id {key_id:?}, which is not configured (keys: {known}); \
         add that key to TRIGGER_RELAY_CODEC_KEYS_FILE"
    )]
    UnknownKey { key_id: String, known: String },
    #[error("a payload marked binary/encrypted has no encryption-key-id")]
    NoKeyId,
    #[error(
        "a payload encrypted with key id {key_id:?} does not decrypt: the key of that id is not \
         the one that encrypted it, or the payload was altered"
    )]
    Open { key_id: String },
    #[error(
        "a payload encrypted with key id {key_id:?} has {len} bytes, fewer than a nonce and a tag"
    )]
    TooShort { key_id: String, len: usize },
    #[error("a decrypted payload is not a serialized Temporal Payload: {0}")]
    NotAPayload(#[from] prost::DecodeError),
    #[error("the system's random number generator failed")]
    Random,
    #[error("AES-256-GCM refused to encrypt a payload")]
    Seal,
}

/// A key id as the key file and the metadata carry it: 1 to 64 characters of letters,
/// digits, `.`, `_` and `-` (it is public: it is stored in every payload).
pub(crate) fn valid_key_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Keys by id, as the key file lists them.
pub(crate) type Keys = Vec<(String, [u8; KEY_BYTES])>;

/// The configured keys: all of them decrypt, the current one encrypts.
pub(crate) struct EncryptionCodec {
    keys: BTreeMap<String, LessSafeKey>,
    current: String,
    random: SystemRandom,
}

impl std::fmt::Debug for EncryptionCodec {
    /// Key ids only, never key material.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncryptionCodec")
            .field("key_ids", &self.keys.keys().collect::<Vec<_>>())
            .field("current", &self.current)
            .finish()
    }
}

impl EncryptionCodec {
    /// From (id, key) pairs and the id of the key that encrypts; None if that id is not among
    /// them. Ids are checked by the key file's parser ([`keys`]).
    pub(crate) fn new(keys: Keys, current: &str) -> Option<Self> {
        let keys: BTreeMap<String, LessSafeKey> = keys
            .into_iter()
            .filter_map(|(id, key)| {
                UnboundKey::new(&AES_256_GCM, &key)
                    .ok()
                    .map(|key| (id, LessSafeKey::new(key)))
            })
            .collect();
        keys.contains_key(current).then(|| Self {
            keys,
            current: current.to_owned(),
            random: SystemRandom::new(),
        })
    }

    pub(crate) fn current_key_id(&self) -> &str {
        &self.current
    }

    pub(crate) fn key_ids(&self) -> Vec<&str> {
        self.keys.keys().map(String::as_str).collect()
    }

    /// `payload` encrypted with the current key.
    pub(crate) fn encrypt(&self, payload: &Payload) -> Result<Payload, CodecError> {
        let key = self
            .keys
            .get(&self.current)
            .ok_or_else(|| self.unknown(&self.current))?;
        let mut nonce = [0u8; NONCE_LEN];
        self.random
            .fill(&mut nonce)
            .map_err(|_| CodecError::Random)?;
        let mut sealed = payload.encode_to_vec();
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::empty(),
            &mut sealed,
        )
        .map_err(|_| CodecError::Seal)?;
        let mut data = Vec::with_capacity(NONCE_LEN + sealed.len());
        data.extend_from_slice(&nonce);
        data.extend_from_slice(&sealed);
        Ok(Payload {
            metadata: HashMap::from([
                (ENCODING.to_owned(), ENCRYPTED.to_vec()),
                (KEY_ID.to_owned(), self.current.as_bytes().to_vec()),
            ]),
            data,
            ..Default::default()
        })
    }

    /// `payload` decrypted with the key its metadata names; a payload that is not
    /// `binary/encrypted` as it is.
    pub(crate) fn decrypt(&self, payload: Payload) -> Result<Payload, CodecError> {
        if !is_encrypted(&payload) {
            return Ok(payload);
        }
        let key_id = payload
            .metadata
            .get(KEY_ID)
            .map(|id| String::from_utf8_lossy(id).into_owned())
            .ok_or(CodecError::NoKeyId)?;
        let key = self
            .keys
            .get(&key_id)
            .ok_or_else(|| self.unknown(&key_id))?;
        if payload.data.len() < NONCE_LEN + TAG_BYTES {
            return Err(CodecError::TooShort {
                key_id,
                len: payload.data.len(),
            });
        }
        let (nonce, sealed) = payload.data.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| CodecError::Open {
            key_id: key_id.clone(),
        })?;
        let mut sealed = sealed.to_vec();
        let plain = key
            .open_in_place(nonce, Aad::empty(), &mut sealed)
            .map_err(|_| CodecError::Open { key_id })?;
        Ok(Payload::decode(&*plain)?)
    }

    fn unknown(&self, key_id: &str) -> CodecError {
        CodecError::UnknownKey {
            key_id: key_id.to_owned(),
            known: self.key_ids().join(", "),
        }
    }
}

/// Whether `payload` is one of ours (or of any codec of Temporal's sample format).
pub fn is_encrypted(payload: &Payload) -> bool {
    payload.metadata.get(ENCODING).map(Vec::as_slice) == Some(ENCRYPTED)
}

fn conversion_error(err: CodecError) -> PayloadConversionError {
    PayloadConversionError::EncodingError(Box::new(err))
}

impl PayloadCodec for EncryptionCodec {
    fn encode(
        &self,
        _: &SerializationContextData,
        payloads: Vec<Payload>,
    ) -> BoxFuture<'static, Result<Vec<Payload>, PayloadConversionError>> {
        let encoded = payloads
            .iter()
            .map(|payload| self.encrypt(payload))
            .collect::<Result<Vec<_>, _>>()
            .map_err(conversion_error);
        futures::future::ready(encoded).boxed()
    }

    fn decode(
        &self,
        _: &SerializationContextData,
        payloads: Vec<Payload>,
    ) -> BoxFuture<'static, Result<Vec<Payload>, PayloadConversionError>> {
        let decoded = payloads
            .into_iter()
            .map(|payload| self.decrypt(payload))
            .collect::<Result<Vec<_>, _>>()
            .map_err(conversion_error);
        futures::future::ready(decoded).boxed()
    }
}

/// One line at start saying what is encrypted, and a warning where personal data still
/// reaches Temporal unencrypted (search attributes and summaries are not payloads).
pub(crate) fn log_status(codec: Option<&EncryptionCodec>, visibility_personal_data: bool) {
    match codec {
        None => tracing::info!(
            "payload encryption off: payloads reach Temporal as JSON \
             (TRIGGER_RELAY_CODEC_KEYS_FILE and TRIGGER_RELAY_CODEC_CURRENT_KEY_ID turn it on)"
        ),
        Some(codec) => {
            tracing::info!(
                current_key_id = codec.current_key_id(),
                key_ids = ?codec.key_ids(),
                "payload encryption on: payloads are encrypted with the current key; any \
                 configured key decrypts"
            );
            if visibility_personal_data {
                tracing::warn!(
                    "payloads are encrypted, but user pks and trigger names still reach \
                     Temporal unencrypted in search attributes (UserPk, TriggerName) and \
                     workflow summaries; TRIGGER_RELAY_VISIBILITY_PERSONAL_DATA=false keeps \
                     them out"
                );
            }
        }
    }
}

/// The data converter of every client the daemon makes (the relay's, the hosted worker's,
/// the commands'): the SDK's default without keys; with them, the encryption codec, and
/// failures whose message and stack trace travel in an encoded (so encrypted) attribute, as
/// the Python worker sends them: a site's exception text is personal data too.
pub(crate) fn data_converter(codec: Option<Arc<EncryptionCodec>>) -> DataConverter {
    match codec {
        None => DataConverter::default(),
        Some(codec) => DataConverter::new(
            PayloadConverter::default(),
            DefaultFailureConverter::new(true),
            codec,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codec(current: &str) -> EncryptionCodec {
        let keys = vec![("a".to_owned(), [1u8; 32]), ("b".to_owned(), [2u8; 32])];
        EncryptionCodec::new(keys, current).expect("current key configured")
    }

    fn json(text: &str) -> Payload {
        Payload {
            metadata: HashMap::from([(ENCODING.to_owned(), b"json/plain".to_vec())]),
            data: text.as_bytes().to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn a_payload_round_trips_and_hides_its_data() {
        let codec = codec("a");
        let plain = json(r#"{"user_pk": "secret-user"}"#);
        let sealed = codec.encrypt(&plain).expect("encrypt");
        assert!(is_encrypted(&sealed));
        assert_eq!(
            sealed.metadata.get(KEY_ID).map(Vec::as_slice),
            Some(&b"a"[..])
        );
        assert!(!String::from_utf8_lossy(&sealed.data).contains("secret-user"));
        // Nonce, the serialized payload, the tag.
        assert_eq!(
            sealed.data.len(),
            NONCE_LEN + plain.encode_to_vec().len() + TAG_BYTES
        );
        assert_eq!(codec.decrypt(sealed).expect("decrypt"), plain);
        // A fresh nonce every time.
        assert_ne!(
            codec.encrypt(&plain).expect("encrypt").data,
            codec.encrypt(&plain).expect("encrypt").data
        );
    }

    #[test]
    fn every_key_decrypts_the_current_one_encrypts() {
        let old = codec("a").encrypt(&json("1")).expect("encrypt");
        let rotated = codec("b");
        assert_eq!(rotated.decrypt(old).expect("old key decrypts"), json("1"));
        let new = rotated.encrypt(&json("2")).expect("encrypt");
        assert_eq!(new.metadata.get(KEY_ID).map(Vec::as_slice), Some(&b"b"[..]));
        let only_a = EncryptionCodec::new(vec![("a".into(), [1u8; 32])], "a").expect("a");
        let err = only_a.decrypt(new).expect_err("b is not configured");
        assert!(
            err.to_string()
                .contains("key id \"b\", which is not configured (keys: a)"),
            "{err}"
        );
    }

    #[test]
    fn plaintext_passes_through_and_tampering_is_refused() {
        let codec = codec("a");
        assert_eq!(codec.decrypt(json("7")).expect("plain"), json("7"));
        let mut sealed = codec.encrypt(&json("7")).expect("encrypt");
        let last = sealed.data.len() - 1;
        sealed.data[last] ^= 1;
        assert!(matches!(
            codec.decrypt(sealed),
            Err(CodecError::Open { .. })
        ));
        let mut short = codec.encrypt(&json("7")).expect("encrypt");
        short.data.truncate(20);
        assert!(matches!(
            codec.decrypt(short),
            Err(CodecError::TooShort { len: 20, .. })
        ));
        let mut anonymous = codec.encrypt(&json("7")).expect("encrypt");
        anonymous.metadata.remove(KEY_ID);
        assert!(matches!(codec.decrypt(anonymous), Err(CodecError::NoKeyId)));
        // Same id, another key: refused, not garbage.
        let other = EncryptionCodec::new(vec![("a".into(), [9u8; 32])], "a").expect("a");
        let sealed = codec.encrypt(&json("7")).expect("encrypt");
        assert!(matches!(
            other.decrypt(sealed),
            Err(CodecError::Open { .. })
        ));
    }

    #[test]
    fn a_current_key_id_without_its_key_is_refused() {
        assert!(EncryptionCodec::new(vec![("a".into(), [1u8; 32])], "b").is_none());
    }

    /// Written by Python's `cryptography` (AESGCM, the Python worker's codec and Temporal's
    /// samples-python `encryption` codec): key id `k1`, key bytes 0..32, nonce bytes 0..12,
    /// the payload `{"metadata": {"encoding": "json/plain"}, "data": "\"hello\""}`.
    const FROM_PYTHON: &str = "000102030405060708090a0b4d14dc13a08ba174e928f9eca3e3121eecb8a8449c1a36122a60c7ed78056cdd233e4fbc54257ed240000e7081621c3c45";

    #[test]
    fn a_payload_encrypted_by_python_decrypts() {
        let key: [u8; 32] = std::array::from_fn(|i| i as u8);
        let codec = EncryptionCodec::new(vec![("k1".into(), key)], "k1").expect("k1");
        let data = (0..FROM_PYTHON.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&FROM_PYTHON[i..i + 2], 16).expect("hex"))
            .collect();
        let sealed = Payload {
            metadata: HashMap::from([
                (ENCODING.to_owned(), ENCRYPTED.to_vec()),
                (KEY_ID.to_owned(), b"k1".to_vec()),
            ]),
            data,
            ..Default::default()
        };
        assert_eq!(codec.decrypt(sealed).expect("decrypt"), json("\"hello\""));
    }

    #[test]
    fn key_ids() {
        for good in ["a", "2026-11", "key_0.v2", &"k".repeat(64)] {
            assert!(valid_key_id(good), "{good}");
        }
        for bad in ["", "a b", "a=b", "é", &"k".repeat(65)] {
            assert!(!valid_key_id(bad), "{bad}");
        }
    }
}
