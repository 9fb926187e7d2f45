//! The TLS client settings: rustls with the `ring` provider.
//!
//! The provider is passed explicitly rather than installed process-wide, so
//! the library never touches global state and needs no C toolchain beyond
//! what `ring` uses.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};

use crate::error::{Error, Result};

/// How to trust the broker.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsConfig {
    /// PEM file of the certificate authorities to trust; `None` trusts the
    /// system's roots.
    pub ca_file: Option<PathBuf>,
}

/// Builds the rustls client settings for `tls`.
pub fn client_config(tls: &TlsConfig) -> Result<Arc<ClientConfig>> {
    let roots = match &tls.ca_file {
        Some(path) => roots_from_file(path)?,
        None => system_roots()?,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

fn roots_from_file(path: &Path) -> Result<RootCertStore> {
    let pem = std::fs::read(path).map_err(|source| Error::CaFile {
        path: path.to_owned(),
        source,
    })?;
    let no_certs = |reason: String| Error::NoCertificates {
        path: path.to_owned(),
        reason,
    };
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| no_certs(e.to_string()))?;
        roots.add(cert).map_err(|e| no_certs(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(no_certs("no CERTIFICATE section".into()));
    }
    Ok(roots)
}

fn system_roots() -> Result<RootCertStore> {
    let found = rustls_native_certs::load_native_certs();
    for error in &found.errors {
        tracing::debug!("loading system root certificates: {error}");
    }
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        return Err(Error::NoSystemRoots);
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_file(name: &str, content: &[u8]) -> PathBuf {
        let path = std::env::temp_dir().join(format!("mqttgw-tls-{}-{name}", std::process::id()));
        std::fs::write(&path, content).expect("temp file");
        path
    }

    #[test]
    fn a_missing_ca_file_is_named() {
        let tls = TlsConfig {
            ca_file: Some("/nonexistent/ca.pem".into()),
        };
        let error = client_config(&tls).expect_err("missing file");
        assert!(matches!(error, Error::CaFile { .. }), "{error}");
        assert!(error.to_string().contains("/nonexistent/ca.pem"));
    }

    #[test]
    fn a_file_without_certificates_is_refused() {
        let path = temp_file("empty.pem", b"not a certificate\n");
        let error = client_config(&TlsConfig {
            ca_file: Some(path.clone()),
        })
        .expect_err("no certs");
        let _ = std::fs::remove_file(&path);
        assert!(matches!(error, Error::NoCertificates { .. }), "{error}");
    }

    #[test]
    fn a_garbled_certificate_is_refused() {
        let path = temp_file(
            "bad.pem",
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        );
        let error = client_config(&TlsConfig {
            ca_file: Some(path.clone()),
        })
        .expect_err("bad cert");
        let _ = std::fs::remove_file(&path);
        assert!(matches!(error, Error::NoCertificates { .. }), "{error}");
    }
}
