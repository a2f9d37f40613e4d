//! The codec endpoint (docs/operations.md, "Reading encrypted payloads"): `POST /codec/decode`
//! and `POST /codec/encode` on the daemon's HTTP port, in the protocol of Temporal's codec
//! servers (samples-go `codec-server/protocol.md`), so that `temporal workflow show
//! --codec-endpoint http://host:9187/codec --codec-auth "Bearer <token>"` and the Temporal UI
//! (its codec server setting) show decrypted payloads.
//!
//! The body is a `Payloads` message as protobuf JSON: `{"payloads": [{"metadata": {key:
//! base64}, "data": base64}]}`. Every request must carry `Authorization: Bearer <token>` (the
//! token of TRIGGER_RELAY_CODEC_SERVER_TOKEN_FILE, compared in constant time): none is 401, a
//! wrong one 403. A browser request (it has an `Origin`) is served only for the origin of
//! TRIGGER_RELAY_CODEC_CORS_ORIGIN, with its CORS preflight; any other origin is 403, so
//! that no other web page can use an operator's browser to decrypt. The body is read only
//! once the request is authorised.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine;
use base64::alphabet;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use ring::hmac;
use ring::rand::SystemRandom;
use serde::{Deserialize, Serialize};
use temporalio_common::protos::temporal::api::common::v1::Payload;

use super::EncryptionCodec;
use crate::config::CodecServerConfig;

pub(crate) const TOKEN_FILE: &str = "TRIGGER_RELAY_CODEC_SERVER_TOKEN_FILE";
pub(crate) const CORS_ORIGIN: &str = "TRIGGER_RELAY_CODEC_CORS_ORIGIN";
/// Shortest token accepted: a bearer token is a password that never gets typed.
pub(crate) const MIN_TOKEN_CHARS: usize = 16;
/// Largest request body: Temporal's payloads are at most 2 MiB each by default, and the UI
/// decodes an event's payloads together.
pub(crate) const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
/// Headers the Temporal UI and CLI send (the UI adds `X-Namespace`).
const ALLOWED_HEADERS: &str = "Authorization, Content-Type, X-Namespace";

#[derive(Debug, thiserror::Error)]
pub(crate) enum CodecServerError {
    #[error("cannot read {TOKEN_FILE} {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{TOKEN_FILE} {path}: the token must be at least {MIN_TOKEN_CHARS} printable ASCII \
         characters without spaces (generate one with `openssl rand -hex 32`)"
    )]
    BadToken { path: PathBuf },
    #[error(
        "{TOKEN_FILE} is set but payload encryption is not (TRIGGER_RELAY_CODEC_KEYS_FILE and \
         TRIGGER_RELAY_CODEC_CURRENT_KEY_ID): the codec endpoint has no key to use"
    )]
    NoKeys,
    #[error("{CORS_ORIGIN} is set but {TOKEN_FILE} is not: the codec endpoint is off")]
    OriginWithoutServer,
    #[error(
        "{CORS_ORIGIN}={origin:?} is not an origin: use scheme://host[:port], such as \
         https://cloud.temporal.io or http://localhost:8233, without a path"
    )]
    BadOrigin { origin: String },
    #[error("cannot make the token's comparison key: the random number generator failed")]
    Random,
}

/// The bearer token, kept as an HMAC under a key of this process: comparing tags with
/// `hmac::verify` takes the same time wherever the presented token differs, and whatever
/// its length.
struct Token {
    key: hmac::Key,
    tag: hmac::Tag,
}

impl Token {
    fn new(secret: &[u8]) -> Result<Self, CodecServerError> {
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &SystemRandom::new())
            .map_err(|_| CodecServerError::Random)?;
        let tag = hmac::sign(&key, secret);
        Ok(Self { key, tag })
    }

    fn matches(&self, presented: &[u8]) -> bool {
        hmac::verify(&self.key, presented, self.tag.as_ref()).is_ok()
    }
}

/// The endpoint's settings and keys.
pub(crate) struct CodecServer {
    codec: Arc<EncryptionCodec>,
    token: Token,
    /// The one origin allowed, as browsers send it (`Origin`'s ASCII serialization).
    origin: Option<HeaderValue>,
}

impl std::fmt::Debug for CodecServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CodecServer")
            .field("codec", &self.codec)
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

impl CodecServer {
    /// The endpoint these settings describe: None when no token file is set.
    pub(crate) fn from_config(
        config: &CodecServerConfig,
        codec: Option<Arc<EncryptionCodec>>,
    ) -> Result<Option<Self>, CodecServerError> {
        let origin = config
            .codec_cors_origin
            .as_deref()
            .map(str::trim)
            .filter(|origin| !origin.is_empty());
        let Some(path) = &config.codec_server_token_file else {
            return match origin {
                Some(_) => Err(CodecServerError::OriginWithoutServer),
                None => Ok(None),
            };
        };
        let codec = codec.ok_or(CodecServerError::NoKeys)?;
        let secret = std::fs::read(path).map_err(|source| CodecServerError::Read {
            path: path.clone(),
            source,
        })?;
        let secret = secret.trim_ascii();
        if secret.len() < MIN_TOKEN_CHARS || !secret.iter().all(u8::is_ascii_graphic) {
            return Err(CodecServerError::BadToken { path: path.clone() });
        }
        let origin = origin.map(parse_origin).transpose()?;
        Ok(Some(Self {
            codec,
            token: Token::new(secret)?,
            origin,
        }))
    }

    /// The routes, with their state; merged into the HTTP endpoint's router (src/http.rs).
    pub(crate) fn router(self) -> Router {
        let origin = self
            .origin
            .as_ref()
            .and_then(|o| o.to_str().ok())
            .unwrap_or("none (CLI only)")
            .to_owned();
        tracing::info!(
            origin,
            current_key_id = self.codec.current_key_id(),
            "serving /codec/decode and /codec/encode (bearer token required)"
        );
        Router::new()
            .route("/codec/decode", post(decode).options(preflight))
            .route("/codec/encode", post(encode).options(preflight))
            .with_state(Arc::new(self))
    }

    /// The CORS answer for a request's `Origin`: Ok(None) without one (not a browser),
    /// Ok(Some(origin)) for the allowed one, Err(Refused) for any other.
    fn cors(&self, headers: &HeaderMap) -> Result<Option<HeaderValue>, Refused> {
        let Some(origin) = headers.get(header::ORIGIN) else {
            return Ok(None);
        };
        if self.origin.as_ref() == Some(origin) {
            return Ok(Some(origin.clone()));
        }
        tracing::warn!(
            origin = %String::from_utf8_lossy(origin.as_bytes()),
            "codec request refused: origin not allowed ({CORS_ORIGIN})"
        );
        Err(Refused)
    }

    /// None if the request carries the token, else the refusal.
    fn refusal(&self, headers: &HeaderMap, cors: Option<&HeaderValue>) -> Option<Response> {
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|value| bearer_token(value.as_bytes()));
        match presented {
            None => {
                let mut response = plain(
                    StatusCode::UNAUTHORIZED,
                    "a bearer token is required: Authorization: Bearer <token>\n".into(),
                    cors,
                );
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"trigger-relay codec\""),
                );
                Some(response)
            }
            Some(token) if self.token.matches(token) => None,
            Some(_) => {
                tracing::warn!("codec request refused: wrong bearer token");
                Some(plain(
                    StatusCode::FORBIDDEN,
                    "wrong bearer token\n".into(),
                    cors,
                ))
            }
        }
    }
}

/// A browser request from an origin other than the allowed one.
struct Refused;

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        plain(
            StatusCode::FORBIDDEN,
            format!("origin not allowed; set {CORS_ORIGIN} to the Temporal UI's origin\n"),
            None,
        )
    }
}

/// The token of `Bearer <token>` (the scheme in any case).
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let (scheme, token) = value.split_at_checked(6)?;
    if !scheme.eq_ignore_ascii_case(b"bearer") || token.first() != Some(&b' ') {
        return None;
    }
    let token = token.trim_ascii();
    (!token.is_empty()).then_some(token)
}

fn parse_origin(value: &str) -> Result<HeaderValue, CodecServerError> {
    let bad = || CodecServerError::BadOrigin {
        origin: value.to_owned(),
    };
    let url = url::Url::parse(value).map_err(|_| bad())?;
    let plain_origin = matches!(url.scheme(), "http" | "https")
        && url.host().is_some()
        && url.path() == "/"
        && url.query().is_none()
        && url.fragment().is_none()
        && url.username().is_empty()
        && url.password().is_none();
    if !plain_origin {
        return Err(bad());
    }
    HeaderValue::from_str(&url.origin().ascii_serialization()).map_err(|_| bad())
}

fn plain(status: StatusCode, message: String, cors: Option<&HeaderValue>) -> Response {
    let mut response = (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        message,
    )
        .into_response();
    allow(&mut response, cors);
    response
}

fn allow(response: &mut Response, cors: Option<&HeaderValue>) {
    let headers = response.headers_mut();
    headers.insert(header::VARY, HeaderValue::from_static("Origin"));
    if let Some(origin) = cors {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        // The UI's "Include cross-origin credentials" setting needs it.
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
}

/// CORS preflight: browsers send it without credentials, before the real request.
async fn preflight(State(server): State<Arc<CodecServer>>, headers: HeaderMap) -> Response {
    match server.cors(&headers) {
        Err(refused) => refused.into_response(),
        Ok(None) => plain(
            StatusCode::FORBIDDEN,
            "a preflight request needs an Origin\n".into(),
            None,
        ),
        Ok(Some(origin)) => {
            let mut response = StatusCode::NO_CONTENT.into_response();
            allow(&mut response, Some(&origin));
            let headers = response.headers_mut();
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("POST, OPTIONS"),
            );
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static(ALLOWED_HEADERS),
            );
            headers.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static("600"),
            );
            response
        }
    }
}

#[derive(Clone, Copy)]
enum Direction {
    Encode,
    Decode,
}

async fn decode(State(server): State<Arc<CodecServer>>, request: Request) -> Response {
    serve(&server, request, Direction::Decode).await
}

async fn encode(State(server): State<Arc<CodecServer>>, request: Request) -> Response {
    serve(&server, request, Direction::Encode).await
}

async fn serve(server: &CodecServer, request: Request, direction: Direction) -> Response {
    let (parts, body) = request.into_parts();
    let cors = match server.cors(&parts.headers) {
        Ok(cors) => cors,
        Err(refused) => return refused.into_response(),
    };
    if let Some(refused) = server.refusal(&parts.headers, cors.as_ref()) {
        return refused;
    }
    let bytes = match axum::body::to_bytes(Body::new(body), MAX_BODY_BYTES).await {
        Ok(bytes) => bytes,
        Err(_) => {
            return plain(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body is over {MAX_BODY_BYTES} bytes or was cut off\n"),
                cors.as_ref(),
            );
        }
    };
    let result = serde_json::from_slice::<JsonPayloads>(&bytes)
        .map_err(|e| format!("the body is not a Payloads message as JSON: {e}"))
        .and_then(|request| request.into_payloads())
        .and_then(|payloads| apply(&server.codec, payloads, direction));
    match result {
        Ok(payloads) => {
            let body = JsonPayloads::from_payloads(&payloads);
            let mut response = (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                serde_json::to_string(&body).unwrap_or_default(),
            )
                .into_response();
            allow(&mut response, cors.as_ref());
            response
        }
        Err(message) => plain(
            StatusCode::BAD_REQUEST,
            format!("{message}\n"),
            cors.as_ref(),
        ),
    }
}

fn apply(
    codec: &EncryptionCodec,
    payloads: Vec<Payload>,
    direction: Direction,
) -> Result<Vec<Payload>, String> {
    payloads
        .into_iter()
        .enumerate()
        .map(|(index, payload)| {
            match direction {
                Direction::Decode => codec.decrypt(payload),
                Direction::Encode => codec.encrypt(&payload),
            }
            .map_err(|e| format!("payload {index}: {e}"))
        })
        .collect()
}

/// Protobuf JSON accepts base64 with either alphabet, padded or not.
const LENIENT: GeneralPurposeConfig =
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
const STANDARD_LENIENT: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, LENIENT);
const URL_SAFE_LENIENT: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, LENIENT);

fn from_base64(what: &str, text: &str) -> Result<Vec<u8>, String> {
    STANDARD_LENIENT
        .decode(text)
        .or_else(|_| URL_SAFE_LENIENT.decode(text))
        .map_err(|_| format!("{what} is not base64"))
}

/// `temporal.api.common.v1.Payloads` as protobuf JSON.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct JsonPayloads {
    #[serde(default)]
    pub(crate) payloads: Vec<JsonPayload>,
}

/// `temporal.api.common.v1.Payload` as protobuf JSON: bytes as base64.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct JsonPayload {
    #[serde(default)]
    pub(crate) metadata: BTreeMap<String, String>,
    #[serde(default)]
    pub(crate) data: String,
}

impl JsonPayloads {
    pub(crate) fn from_payloads(payloads: &[Payload]) -> Self {
        Self {
            payloads: payloads
                .iter()
                .map(|payload| JsonPayload {
                    metadata: payload
                        .metadata
                        .iter()
                        .map(|(key, value)| (key.clone(), STANDARD.encode(value)))
                        .collect(),
                    data: STANDARD.encode(&payload.data),
                })
                .collect(),
        }
    }

    pub(crate) fn into_payloads(self) -> Result<Vec<Payload>, String> {
        self.payloads
            .into_iter()
            .enumerate()
            .map(|(index, payload)| {
                let metadata = payload
                    .metadata
                    .into_iter()
                    .map(|(key, value)| {
                        from_base64(&format!("payload {index}: metadata {key:?}"), &value)
                            .map(|value| (key, value))
                    })
                    .collect::<Result<_, _>>()?;
                Ok(Payload {
                    metadata,
                    data: from_base64(&format!("payload {index}: data"), &payload.data)?,
                    ..Default::default()
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_are_read_from_the_header() {
        assert_eq!(bearer_token(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer_token(b"bearer  abc "), Some(&b"abc"[..]));
        assert_eq!(bearer_token(b"Basic abc"), None);
        assert_eq!(bearer_token(b"Bearerabc"), None);
        assert_eq!(bearer_token(b"Bearer "), None);
        assert_eq!(bearer_token(b""), None);
    }

    #[test]
    fn tokens_compare_whole() {
        let token = Token::new(b"0123456789abcdef").expect("token");
        assert!(token.matches(b"0123456789abcdef"));
        assert!(!token.matches(b"0123456789abcdeF"));
        assert!(!token.matches(b"0123456789abcdef0"));
        assert!(!token.matches(b""));
    }

    #[test]
    fn origins_are_normalised_or_refused() {
        let ok = |value: &str| parse_origin(value).map(|v| v.to_str().unwrap_or("").to_owned());
        assert_eq!(
            ok("https://cloud.temporal.io").ok().as_deref(),
            Some("https://cloud.temporal.io")
        );
        assert_eq!(
            ok("https://Cloud.Temporal.io/").ok().as_deref(),
            Some("https://cloud.temporal.io")
        );
        assert_eq!(
            ok("http://localhost:8233").ok().as_deref(),
            Some("http://localhost:8233")
        );
        assert_eq!(
            ok("https://ui.example:443").ok().as_deref(),
            Some("https://ui.example")
        );
        for bad in [
            "cloud.temporal.io",
            "https://ui/namespaces",
            "ftp://ui",
            "https://ui?x=1",
            "*",
        ] {
            assert!(parse_origin(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn payload_json_round_trips_and_accepts_both_alphabets() {
        let payload = Payload {
            metadata: [("encoding".to_owned(), b"json/plain".to_vec())].into(),
            data: vec![0xfb, 0xff, 0x01],
            ..Default::default()
        };
        let json =
            serde_json::to_string(&JsonPayloads::from_payloads(std::slice::from_ref(&payload)))
                .expect("json");
        assert_eq!(
            json,
            r#"{"payloads":[{"metadata":{"encoding":"anNvbi9wbGFpbg=="},"data":"+/8B"}]}"#
        );
        let back: JsonPayloads = serde_json::from_str(&json).expect("parse");
        assert_eq!(
            back.into_payloads().expect("payloads"),
            vec![payload.clone()]
        );
        let url_safe: JsonPayloads = serde_json::from_str(
            r#"{"payloads":[{"metadata":{"encoding":"anNvbi9wbGFpbg"},"data":"-_8B"}]}"#,
        )
        .expect("parse");
        assert_eq!(url_safe.into_payloads().expect("payloads"), vec![payload]);
        let bad: JsonPayloads =
            serde_json::from_str(r#"{"payloads":[{"data":"%%"}]}"#).expect("parse");
        assert_eq!(
            bad.into_payloads().expect_err("not base64"),
            "payload 0: data is not base64"
        );
    }
}
