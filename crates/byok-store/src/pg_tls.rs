//! PostgreSQL connections that honour libpq's `sslmode` and `sslrootcert`, over rustls.
//!
//! diesel-async's own `establish` always connects without TLS, so every PostgreSQL connection
//! (the pool, migrations, the LISTEN connection) goes through [`PgConnector`] instead: the two
//! TLS parameters are taken out of the URL, the rest is parsed by tokio-postgres, and the
//! connection is handed to diesel-async.
//!
//! | `sslmode` | TLS | certificate checked |
//! | --- | --- | --- |
//! | `disable` | never | - |
//! | `prefer` (default) | if the server offers it | only with `sslrootcert`: the chain |
//! | `require` | always | only with `sslrootcert`: the chain |
//! | `verify-ca` | always | the chain, against the `sslrootcert` file |
//! | `verify-full` | always | the chain (the `sslrootcert` file, or `system`) and the host name |
//!
//! `verify-ca` and `verify-full` need `sslrootcert`: without it they are refused at start (libpq
//! refuses them too when its default `~/.postgresql/root.crt` is missing; a silent fallback to
//! public roots would let any holder of a public certificate pass `verify-ca`).
//! `sslrootcert=system` means the webpki (Mozilla) roots and, as in libpq, requires
//! `verify-full` (which it implies when `sslmode` is absent). TLS is never attempted over a Unix
//! socket (libpq ignores `sslmode` there too).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use byok_core::StoreError;
use diesel::{ConnectionError, ConnectionResult};
use diesel_async::AsyncPgConnection;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres::config::{Host, SslMode as PgSslMode};
use tokio_postgres_rustls::MakeRustlsConnect;

/// libpq's `sslmode` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> Result<Self, StoreError> {
        Ok(match value {
            "disable" => Self::Disable,
            "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            // `allow` (plain first, TLS as a fallback) is not offered: refuse it by name.
            _ => {
                return Err(config_err(
                    "DATABASE_URL: unsupported sslmode; use one of disable, prefer, require, \
                     verify-ca, verify-full",
                ));
            }
        })
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        }
    }
}

/// Where trusted CA certificates come from.
enum RootSource {
    /// No `sslrootcert`.
    Unset,
    /// `sslrootcert=system`: the webpki roots.
    System,
    /// `sslrootcert=PATH`: PEM certificates in a file.
    File(String),
}

/// A parsed PostgreSQL `DATABASE_URL`: opens connections with its TLS settings.
/// Holds the password: no `Debug` that shows it, never logged.
#[derive(Clone)]
pub(crate) struct PgConnector {
    config: tokio_postgres::Config,
    tls: MakeRustlsConnect,
    mode: SslMode,
}

impl fmt::Debug for PgConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgConnector")
            .field("sslmode", &self.mode)
            .finish_non_exhaustive()
    }
}

fn config_err(msg: impl Into<String>) -> StoreError {
    StoreError::Unavailable(msg.into().into())
}

/// An error and its causes on one line (tokio-postgres' `Display` leaves the cause out, and
/// the cause is what says why TLS failed).
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let text = cause.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = cause.source();
    }
    out
}

/// `%XX` decoding of one query-string component (`+` stays `+`, as in tokio-postgres).
fn percent_decode(s: &str) -> Result<String, StoreError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            match hex {
                Some(b) => {
                    out.push(b);
                    i += 3;
                    continue;
                }
                None => {
                    return Err(config_err(
                        "DATABASE_URL: malformed percent-encoding in a query parameter",
                    ));
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out)
        .map_err(|_| config_err("DATABASE_URL: a query parameter is not valid UTF-8"))
}

impl PgConnector {
    /// Parses a `postgres://` / `postgresql://` URL. Errors name the problem, never the URL.
    pub(crate) fn parse(url: &str) -> Result<Self, StoreError> {
        let (base, query) = match url.split_once('?') {
            Some((base, query)) => (base, query),
            None => (url, ""),
        };
        let mut mode = None;
        let mut root = RootSource::Unset;
        let mut rest = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match percent_decode(key)?.as_str() {
                "sslmode" => mode = Some(SslMode::parse(&percent_decode(value)?)?),
                "sslrootcert" => {
                    let value = percent_decode(value)?;
                    root = match value.as_str() {
                        "" => RootSource::Unset,
                        "system" => RootSource::System,
                        _ => RootSource::File(value),
                    };
                }
                _ => rest.push(pair),
            }
        }
        let mode = match (mode, &root) {
            (None, RootSource::System) => SslMode::VerifyFull,
            (None, _) => SslMode::Prefer,
            (Some(SslMode::VerifyCa), RootSource::Unset) => {
                return Err(config_err(
                    "DATABASE_URL: sslmode=verify-ca needs sslrootcert=PATH, a PEM file of the CA \
                     that signed the server's certificate",
                ));
            }
            (Some(SslMode::VerifyFull), RootSource::Unset) => {
                return Err(config_err(
                    "DATABASE_URL: sslmode=verify-full needs sslrootcert=PATH, a PEM file of the \
                     CA that signed the server's certificate (or sslrootcert=system for a \
                     certificate from a public CA)",
                ));
            }
            (Some(SslMode::VerifyFull), _) => SslMode::VerifyFull,
            (Some(m), RootSource::System) => {
                return Err(config_err(format!(
                    "DATABASE_URL: sslrootcert=system needs sslmode=verify-full (got sslmode={})",
                    m.as_str()
                )));
            }
            (Some(m), _) => m,
        };
        let stripped = if rest.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", rest.join("&"))
        };
        let mut config: tokio_postgres::Config = stripped.parse().map_err(|e| {
            config_err(format!(
                "DATABASE_URL is not a valid PostgreSQL URL: {}",
                error_chain(&e)
            ))
        })?;
        let unix_only = !config.get_hosts().is_empty()
            && config
                .get_hosts()
                .iter()
                .all(|h| !matches!(h, Host::Tcp(_)));
        config.ssl_mode(match mode {
            _ if unix_only => PgSslMode::Disable,
            SslMode::Disable => PgSslMode::Disable,
            SslMode::Prefer => PgSslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => PgSslMode::Require,
        });
        bound_network_waits(&mut config);
        let tls = MakeRustlsConnect::new(client_config(mode, &root)?);
        Ok(Self { config, tls, mode })
    }

    /// Opens one connection.
    pub(crate) async fn connect(&self) -> ConnectionResult<AsyncPgConnection> {
        let (client, connection) = self.config.connect(self.tls.clone()).await.map_err(|e| {
            ConnectionError::BadConnection(format!(
                "could not connect to PostgreSQL (sslmode={}): {}",
                self.mode.as_str(),
                error_chain(&e)
            ))
        })?;
        AsyncPgConnection::try_from_client_and_connection(client, connection).await
    }
}

/// Connecting may take this long (libpq's `connect_timeout`; the URL's own value wins).
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// An idle connection is probed after this long, then every [`KEEPALIVE_INTERVAL`].
const KEEPALIVE_IDLE: Duration = Duration::from_secs(10);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
const KEEPALIVE_RETRIES: u32 = 3;
/// Data sent and not acknowledged for this long closes the connection (`TCP_USER_TIMEOUT`,
/// Linux), instead of about 15 minutes of retransmissions.
pub(crate) const TCP_USER_TIMEOUT: Duration = Duration::from_secs(10);

/// Every connection (the pool's, the migrations', the LISTEN one) notices a database that
/// stopped answering (dropped packets: a failover, a partition) within seconds rather than
/// after TCP's retransmission timeout. Values the URL sets itself are kept.
fn bound_network_waits(config: &mut tokio_postgres::Config) {
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    if config.get_tcp_user_timeout().is_none() {
        config.tcp_user_timeout(TCP_USER_TIMEOUT);
    }
    if config.get_keepalives() {
        // tokio-postgres' default idle time is libpq's: 2 hours.
        if config.get_keepalives_idle() == Duration::from_secs(2 * 60 * 60) {
            config.keepalives_idle(KEEPALIVE_IDLE);
        }
        if config.get_keepalives_interval().is_none() {
            config.keepalives_interval(KEEPALIVE_INTERVAL);
        }
        if config.get_keepalives_retries().is_none() {
            config.keepalives_retries(KEEPALIVE_RETRIES);
        }
    }
}

fn load_roots(root: &RootSource) -> Result<Option<RootCertStore>, StoreError> {
    match root {
        RootSource::Unset => Ok(None),
        RootSource::System => Ok(Some(RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        })),
        RootSource::File(path) => {
            let bad =
                |what: String| config_err(format!("DATABASE_URL: sslrootcert {path}: {what}"));
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| bad(e.to_string()))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| bad(e.to_string()))?;
            if certs.is_empty() {
                return Err(bad("no PEM certificate in the file".into()));
            }
            let mut store = RootCertStore::empty();
            for cert in certs {
                store.add(cert).map_err(|e| bad(e.to_string()))?;
            }
            Ok(Some(store))
        }
    }
}

fn client_config(mode: SslMode, root: &RootSource) -> Result<ClientConfig, StoreError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| config_err(format!("TLS set-up failed: {e}")))?;
    let roots = load_roots(root)?;
    // `parse` refuses verify-ca / verify-full without `sslrootcert`; never fall back to a
    // default set of roots here.
    let needed = || config_err(format!("sslmode={} needs sslrootcert", mode.as_str()));
    let config = match mode {
        SslMode::VerifyFull => {
            let roots = roots.ok_or_else(needed)?;
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        SslMode::VerifyCa => {
            let roots = roots.ok_or_else(needed)?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(ChainVerifier {
                    roots: Some(Arc::new(roots)),
                    provider,
                }))
                .with_no_client_auth()
        }
        // libpq: with a root certificate, `prefer` and `require` check the chain like
        // `verify-ca`; without one they take any certificate.
        SslMode::Disable | SslMode::Prefer | SslMode::Require => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(ChainVerifier {
                roots: roots.map(Arc::new),
                provider,
            }))
            .with_no_client_auth(),
    };
    Ok(config)
}

/// Checks the server's chain against `roots` (any certificate when `None`), never its name.
/// The handshake signature is always checked, so the server must hold the certificate's key.
#[derive(Debug)]
struct ChainVerifier {
    roots: Option<Arc<RootCertStore>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for ChainVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(roots) = &self.roots {
            let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
            rustls::client::verify_server_cert_signed_by_trust_anchor(
                &cert,
                roots,
                intermediates,
                now,
                self.provider.signature_verification_algorithms.all,
            )?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(url: &str) -> String {
        match PgConnector::parse(url) {
            Ok(_) => panic!("parsed"),
            Err(e) => error_chain(&e),
        }
    }

    #[test]
    fn modes() {
        let mode = |q: &str| {
            PgConnector::parse(&format!("postgres://u:pw@db.example/app{q}"))
                .map(|c| (c.mode, c.config.get_ssl_mode()))
                .map_err(|e| error_chain(&e))
        };
        assert_eq!(mode(""), Ok((SslMode::Prefer, PgSslMode::Prefer)));
        assert_eq!(
            mode("?sslmode=disable"),
            Ok((SslMode::Disable, PgSslMode::Disable))
        );
        assert_eq!(
            mode("?sslmode=require&application_name=x"),
            Ok((SslMode::Require, PgSslMode::Require))
        );
        assert_eq!(
            mode("?sslrootcert=system"),
            Ok((SslMode::VerifyFull, PgSslMode::Require))
        );
        assert_eq!(
            mode("?connect_timeout=3&sslmode=verify-full&sslrootcert=system"),
            Ok((SslMode::VerifyFull, PgSslMode::Require))
        );
        // A Unix socket never uses TLS.
        let unix = PgConnector::parse("postgres://u@%2Frun%2Fpostgresql/app?sslmode=require")
            .map(|c| c.config.get_ssl_mode());
        assert!(matches!(unix, Ok(PgSslMode::Disable)));
    }

    #[test]
    fn network_waits_are_bounded() {
        let c = PgConnector::parse("postgres://u@db.example/app").map(|c| c.config);
        let Ok(c) = c else { panic!("parsed") };
        assert_eq!(c.get_connect_timeout(), Some(&CONNECT_TIMEOUT));
        assert_eq!(c.get_tcp_user_timeout(), Some(&TCP_USER_TIMEOUT));
        assert!(c.get_keepalives());
        assert_eq!(c.get_keepalives_idle(), KEEPALIVE_IDLE);
        assert_eq!(c.get_keepalives_interval(), Some(KEEPALIVE_INTERVAL));
        assert_eq!(c.get_keepalives_retries(), Some(KEEPALIVE_RETRIES));
        // The URL's own values win.
        let c = PgConnector::parse(
            "postgres://u@db.example/app?connect_timeout=2&keepalives_idle=30&tcp_user_timeout=20",
        )
        .map(|c| c.config);
        let Ok(c) = c else { panic!("parsed") };
        assert_eq!(c.get_connect_timeout(), Some(&Duration::from_secs(2)));
        assert_eq!(c.get_keepalives_idle(), Duration::from_secs(30));
        assert_eq!(c.get_tcp_user_timeout(), Some(&Duration::from_secs(20)));
    }

    #[test]
    fn errors_never_show_the_url() {
        let e = err("postgres://u:s3cret@db.example/app?sslmode=verify-everything");
        assert!(
            e.contains("disable, prefer, require, verify-ca, verify-full"),
            "{e}"
        );
        assert!(
            !e.contains("s3cret") && !e.contains("verify-everything"),
            "{e}"
        );
        let e = err("postgres://u:s3cret@db.example/app?sslmode=require&sslrootcert=system");
        assert!(
            e.contains("sslrootcert=system needs sslmode=verify-full"),
            "{e}"
        );
        // verify-ca / verify-full never fall back to public roots: no sslrootcert, no start.
        for q in ["sslmode=verify-ca", "sslmode=verify-ca&sslrootcert="] {
            let e = err(&format!("postgres://u:s3cret@db.example/app?{q}"));
            assert!(
                e.contains("sslmode=verify-ca needs sslrootcert=PATH"),
                "{e}"
            );
            assert!(!e.contains("s3cret"), "{e}");
        }
        let e = err("postgres://u:s3cret@db.example/app?sslmode=verify-full");
        assert!(
            e.contains("sslmode=verify-full needs sslrootcert=PATH"),
            "{e}"
        );
        assert!(e.contains("sslrootcert=system"), "{e}");
        let e = err("postgres://u:s3cret@db.example/app?sslmode=verify-ca&sslrootcert=system");
        assert!(
            e.contains("sslrootcert=system needs sslmode=verify-full"),
            "{e}"
        );
        let e = err("postgres://u:s3cret@db.example/app?sslrootcert=%2Fnonexistent%2Fca.pem");
        assert!(e.contains("/nonexistent/ca.pem"), "{e}");
        assert!(!e.contains("s3cret"), "{e}");
        let e = err("postgres://u:s3cret@db.example/app?bogus=1");
        assert!(e.contains("unknown option `bogus`"), "{e}");
        assert!(!e.contains("s3cret"), "{e}");
    }
}
