//! libpq's TLS settings for the daemon's PostgreSQL connections (the pool and the listener).
//!
//! tokio-postgres knows `sslmode` disable/prefer/require only, and no `sslrootcert`,
//! `sslcert` or `sslkey`: a URL written for psql or Django (`sslmode=verify-full&
//! sslrootcert=/etc/ssl/rds.pem`) would be refused as it stands. [`split`] takes libpq's TLS
//! parameters off the URL (or the `key=value` string) and off `PGSSLMODE`, `PGSSLROOTCERT`,
//! `PGSSLCERT` and `PGSSLKEY`, leaves the rest to tokio-postgres, and [`connector`] builds a
//! rustls configuration with libpq's meaning of each mode:
//!
//! | sslmode | encrypted | certificate checked | host name checked |
//! |---|---|---|---|
//! | disable | no | – | – |
//! | prefer (default) | if the server offers TLS | no | no |
//! | require | yes | only if `sslrootcert` is set (then as verify-ca) | no |
//! | verify-ca | yes | yes | no |
//! | verify-full | yes | yes | yes |
//!
//! Without `sslrootcert` the platform's CA certificates are trusted (`sslrootcert=system`
//! says so explicitly, as in libpq 16).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio_postgres::config::SslMode as DriverSslMode;
pub use tokio_postgres_rustls::MakeRustlsConnect;

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> Result<Self, TlsError> {
        match value {
            "disable" => Ok(SslMode::Disable),
            // libpq's `allow` tries plaintext first; encrypting when offered is stricter.
            "allow" | "prefer" => Ok(SslMode::Prefer),
            "require" => Ok(SslMode::Require),
            "verify-ca" => Ok(SslMode::VerifyCa),
            "verify-full" => Ok(SslMode::VerifyFull),
            other => Err(TlsError::BadMode(other.to_owned())),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    fn driver_mode(self) -> DriverSslMode {
        match self {
            SslMode::Disable => DriverSslMode::Disable,
            SslMode::Prefer => DriverSslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => DriverSslMode::Require,
        }
    }
}

/// The TLS part of a connection string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    pub mode: SslMode,
    /// `sslrootcert`: a PEM file of trusted CAs; `None` or `system` = the platform's.
    pub root_cert: Option<PathBuf>,
    /// `sslcert` and `sslkey`: a client certificate (both or neither).
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

impl fmt::Display for TlsSettings {
    /// What an operator needs to find the setting at fault; paths are not secrets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sslmode={}", self.mode.as_str())?;
        if let Some(root) = &self.root_cert {
            write!(f, ", sslrootcert={}", root.display())?;
        }
        if let Some((cert, _)) = &self.client_cert {
            write!(f, ", sslcert={}", cert.display())?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("sslmode={0:?} is not one of disable, allow, prefer, require, verify-ca, verify-full")]
    BadMode(String),
    #[error("sslcert and sslkey go together; only {0} is set")]
    HalfClientCert(&'static str),
    #[error("cannot read sslrootcert {path}: {detail}")]
    RootCert { path: PathBuf, detail: String },
    #[error("cannot read sslcert {path} / sslkey: {detail}")]
    ClientCert { path: PathBuf, detail: String },
    #[error(
        "no CA certificates found on this machine for sslmode={0}; set sslrootcert to the \
         PEM file of your database's CA"
    )]
    NoPlatformRoots(&'static str),
    #[error("invalid TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("a key=value connection string has an unterminated quote")]
    Unterminated,
}

/// Takes libpq's TLS parameters off `conninfo` (URL or `key=value` form); returns the rest,
/// for tokio-postgres, and the TLS settings. `env` looks up `PGSSLMODE` and friends, which
/// count where the string says nothing, as in libpq.
pub fn split(
    conninfo: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<(String, TlsSettings, DriverSslMode), TlsError> {
    let (rest, mut found) = if is_url(conninfo) {
        split_url(conninfo)
    } else {
        split_key_values(conninfo)?
    };
    let mut take = |key: &str, var: &str| found.remove(key).or_else(|| env(var));
    let mode = take("sslmode", "PGSSLMODE");
    let root = take("sslrootcert", "PGSSLROOTCERT");
    let cert = take("sslcert", "PGSSLCERT");
    let key = take("sslkey", "PGSSLKEY");
    let mode = match mode.as_deref() {
        None | Some("") => SslMode::Prefer,
        Some(value) => SslMode::parse(value)?,
    };
    let root_cert = root
        .filter(|r| !r.is_empty() && r != "system")
        .map(PathBuf::from);
    let client_cert = match (
        cert.filter(|c| !c.is_empty()),
        key.filter(|k| !k.is_empty()),
    ) {
        (Some(cert), Some(key)) => Some((PathBuf::from(cert), PathBuf::from(key))),
        (None, None) => None,
        (Some(_), None) => return Err(TlsError::HalfClientCert("sslcert")),
        (None, Some(_)) => return Err(TlsError::HalfClientCert("sslkey")),
    };
    let settings = TlsSettings {
        mode,
        root_cert,
        client_cert,
    };
    Ok((rest, settings.clone(), mode.driver_mode()))
}

const TLS_KEYS: [&str; 4] = ["sslmode", "sslrootcert", "sslcert", "sslkey"];

fn is_url(conninfo: &str) -> bool {
    conninfo.starts_with("postgres://") || conninfo.starts_with("postgresql://")
}

/// The query string is edited as text: the part before it may hold several hosts
/// (`h1:5432,h2:5432`), which a URL parser refuses but tokio-postgres accepts.
fn split_url(url: &str) -> (String, std::collections::HashMap<String, String>) {
    let mut found = std::collections::HashMap::new();
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_owned(), found);
    };
    let mut kept = url::form_urlencoded::Serializer::new(String::new());
    let mut any = false;
    for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
        if TLS_KEYS.contains(&key.as_ref()) {
            found.insert(key.into_owned(), value.into_owned());
        } else {
            kept.append_pair(&key, &value);
            any = true;
        }
    }
    let rest = if any {
        format!("{base}?{}", kept.finish())
    } else {
        base.to_owned()
    };
    (rest, found)
}

/// `host=db port=5432 sslmode='verify-full'`: values may be single-quoted with `\` escapes.
fn split_key_values(
    conninfo: &str,
) -> Result<(String, std::collections::HashMap<String, String>), TlsError> {
    let mut found = std::collections::HashMap::new();
    let mut kept: Vec<String> = Vec::new();
    let mut chars = conninfo.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        if key.is_empty() {
            break;
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next_if_eq(&'=').is_none() {
            // Not a pair: leave it for tokio-postgres to report.
            kept.push(key);
            continue;
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    Some('\'') => break,
                    Some('\\') => value.push(chars.next().ok_or(TlsError::Unterminated)?),
                    Some(c) => value.push(c),
                    None => return Err(TlsError::Unterminated),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                value.push(c);
            }
        }
        if TLS_KEYS.contains(&key.as_str()) {
            found.insert(key, value);
        } else {
            let quoted = value.replace('\\', "\\\\").replace('\'', "\\'");
            kept.push(format!("{key}='{quoted}'"));
        }
    }
    Ok((kept.join(" "), found))
}

/// The rustls connector for `settings`, with ring as the crypto provider.
pub fn connector(settings: &TlsSettings) -> Result<MakeRustlsConnect, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let algorithms = provider.signature_verification_algorithms;
    let verifier: Arc<dyn ServerCertVerifier> = match (settings.mode, &settings.root_cert) {
        // tokio-postgres never asks for TLS with `disable`; the connector is still needed.
        (SslMode::Disable | SslMode::Prefer, _) | (SslMode::Require, None) => {
            Arc::new(Unverified { algorithms })
        }
        (SslMode::Require | SslMode::VerifyCa, _) => Arc::new(CaOnly {
            inner: webpki_verifier(settings, provider)?,
        }),
        (SslMode::VerifyFull, _) => webpki_verifier(settings, provider)?,
    };
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let config = match &settings.client_cert {
        Some((cert, key)) => {
            let certs = CertificateDer::pem_file_iter(cert)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| client_cert_error(cert, e))?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(|e| client_cert_error(cert, e))?;
            builder.with_client_auth_cert(certs, key)?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(MakeRustlsConnect::new(config))
}

fn client_cert_error(path: &Path, error: impl fmt::Display) -> TlsError {
    TlsError::ClientCert {
        path: path.to_owned(),
        detail: error.to_string(),
    }
}

fn webpki_verifier(
    settings: &TlsSettings,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<WebPkiServerVerifier>, TlsError> {
    let mut roots = RootCertStore::empty();
    match &settings.root_cert {
        Some(path) => {
            let root_error = |detail: String| TlsError::RootCert {
                path: path.clone(),
                detail,
            };
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| root_error(e.to_string()))?;
            if certs.is_empty() {
                return Err(root_error("no PEM certificate in the file".into()));
            }
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| root_error(format!("not a usable CA certificate: {e}")))?;
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(native.certs);
            if roots.is_empty() {
                return Err(TlsError::NoPlatformRoots(settings.mode.as_str()));
            }
        }
    }
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| TlsError::Rustls(rustls::Error::General(e.to_string())))
}

/// `prefer` and `require` without a CA: encrypted, nothing verified (libpq's meaning). The
/// handshake signatures are still checked, so the session key belongs to the presented
/// certificate.
#[derive(Debug)]
struct Unverified {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain must lead to a trusted CA; the host name is not compared.
#[derive(Debug)]
struct CaOnly {
    inner: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for CaOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn url_parameters_are_taken_off() -> Result<(), TlsError> {
        let (rest, tls, driver) = split(
            "postgres://relay:pw@db:5432/site?sslmode=verify-full&sslrootcert=/etc/ca%20x.pem&application_name=r",
            no_env,
        )?;
        assert_eq!(rest, "postgres://relay:pw@db:5432/site?application_name=r");
        assert_eq!(tls.mode, SslMode::VerifyFull);
        assert_eq!(tls.root_cert, Some(PathBuf::from("/etc/ca x.pem")));
        assert_eq!(driver, DriverSslMode::Require);
        let (rest, tls, _) = split("postgresql://h1:5432,h2:5433/db?sslmode=disable", no_env)?;
        assert_eq!(rest, "postgresql://h1:5432,h2:5433/db");
        assert_eq!(tls.mode, SslMode::Disable);
        Ok(())
    }

    #[test]
    fn key_value_strings_and_environment() -> Result<(), TlsError> {
        let env = |var: &str| (var == "PGSSLMODE").then(|| "require".to_owned());
        let (rest, tls, _) = split(
            "host=db dbname='my site' sslrootcert = '/a\\'b.pem' user=relay",
            env,
        )?;
        assert_eq!(rest, "host='db' dbname='my site' user='relay'");
        assert_eq!(tls.mode, SslMode::Require);
        assert_eq!(tls.root_cert, Some(PathBuf::from("/a'b.pem")));
        // The string wins over the environment.
        let (_, tls, _) = split("postgres://db/site?sslmode=disable", env)?;
        assert_eq!(tls.mode, SslMode::Disable);
        // libpq's default.
        let (_, tls, _) = split("postgres://db/site", no_env)?;
        assert_eq!(tls.mode, SslMode::Prefer);
        Ok(())
    }

    #[test]
    fn bad_settings_are_named() {
        assert!(matches!(
            split("postgres://db/site?sslmode=verify", no_env),
            Err(TlsError::BadMode(m)) if m == "verify"
        ));
        assert!(matches!(
            split("postgres://db/site?sslcert=/c.pem", no_env),
            Err(TlsError::HalfClientCert("sslcert"))
        ));
        let missing = TlsSettings {
            mode: SslMode::VerifyFull,
            root_cert: Some(PathBuf::from("/nonexistent/ca.pem")),
            client_cert: None,
        };
        let error = connector(&missing).err().map(|e| e.to_string());
        assert!(
            error
                .as_deref()
                .is_some_and(|e| e.contains("sslrootcert /nonexistent/ca.pem")),
            "{error:?}"
        );
    }
}
