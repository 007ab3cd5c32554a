//! TLS material from connection configs: PEM parsing into rustls types, and a client
//! configuration that trusts only the configured CA (never the host's trust store, so a
//! user's private engine cannot be impersonated by a publicly trusted certificate).

use std::sync::Arc;

use byok_core::execution::ExecError;
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

fn bad(what: &str) -> ExecError {
    ExecError::BackendUnavailable(format!("{what} is not usable PEM"))
}

/// The certificates of a PEM bundle, as DER. At least one, or an error naming `what`.
pub fn pem_certificates(pem: &str, what: &str) -> Result<Vec<CertificateDer<'static>>, ExecError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| bad(what))?;
    if certs.is_empty() {
        return Err(bad(what));
    }
    Ok(certs)
}

/// A client configuration trusting only `ca_pem`, presenting `identity` (certificate chain
/// PEM, private key PEM) when given.
pub fn client_config(
    ca_pem: &str,
    identity: Option<(&str, &str)>,
) -> Result<rustls::ClientConfig, ExecError> {
    let mut roots = RootCertStore::empty();
    for cert in pem_certificates(ca_pem, "tls_ca")? {
        roots.add(cert).map_err(|_| bad("tls_ca"))?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| ExecError::BackendUnavailable(format!("TLS set-up: {e}")))?
    .with_root_certificates(roots);
    match identity {
        None => Ok(builder.with_no_client_auth()),
        Some((cert_pem, key_pem)) => {
            let chain = pem_certificates(cert_pem, "tls_cert")?;
            let key =
                PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|_| bad("tls_key"))?;
            builder.with_client_auth_cert(chain, key).map_err(|_| {
                ExecError::BackendUnavailable("tls_cert and tls_key do not belong together".into())
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_refused_with_the_field_name_and_nothing_else() {
        for bad_pem in [
            "",
            "not pem",
            "-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----\n",
        ] {
            let err = pem_certificates(bad_pem, "tls_ca").unwrap_err();
            assert_eq!(err.code(), "backend_unavailable");
            assert!(err.to_string().contains("tls_ca"));
            assert!(!err.to_string().contains("!!"));
        }
        assert!(client_config("nope", None).is_err());
    }
}
