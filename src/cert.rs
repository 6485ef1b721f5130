//! Certificates: load the user's PEM pair, or load / create / renew the
//! self-signed development certificate, and hash it for browsers.
//!
//! Development certificates follow the W3C WebTransport rules for
//! `serverCertificateHashes`: X.509v3, ECDSA P-256, total validity at most
//! 14 days, and the current time inside it.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use base64::Engine;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use sha2::{Digest, Sha256};
use time::{Duration, OffsetDateTime};

/// Default total validity of a generated certificate, back-dating included.
/// Browsers refuse hash-pinned certificates valid for more than 14 days.
pub const DEV_CERT_VALIDITY: Duration = Duration::days(13);
/// The browser limit on a hash-pinned certificate's total validity.
pub const MAX_DEV_CERT_VALIDITY: Duration = Duration::days(14);
/// Default: a development certificate with less than this left is replaced.
pub const RENEW_BEFORE: Duration = Duration::days(2);

/// How far `not_before` is set in the past, to tolerate small clock skew:
/// an hour, or a tenth of a (test-sized) short validity.
fn backdate(validity: Duration) -> Duration {
    (validity / 10i32).min(Duration::hours(1))
}

/// Lifetime of generated development certificates.
#[derive(Debug, Clone, Copy)]
pub struct DevCertPolicy {
    pub validity: Duration,
    pub renew_before: Duration,
}

impl Default for DevCertPolicy {
    fn default() -> Self {
        DevCertPolicy {
            validity: DEV_CERT_VALIDITY,
            renew_before: RENEW_BEFORE,
        }
    }
}

const DEV_CERT_FILE: &str = "dev.pem";
const DEV_KEY_FILE: &str = "dev.key";

/// A certificate chain and key ready for rustls, with what `/cert-hash`
/// publishes about the leaf.
#[derive(Debug)]
pub struct CertBundle {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    /// SHA-256 of the leaf certificate's DER encoding.
    pub sha256: [u8; 32],
    pub not_after: OffsetDateTime,
    /// True for the generated development certificate.
    pub dev: bool,
}

impl Clone for CertBundle {
    fn clone(&self) -> Self {
        CertBundle {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
            sha256: self.sha256,
            not_after: self.not_after,
            dev: self.dev,
        }
    }
}

impl CertBundle {
    pub fn sha256_hex(&self) -> String {
        hex::encode(self.sha256)
    }

    pub fn sha256_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.sha256)
    }

    /// The JSON body served at `/cert-hash` (PROTOCOL.md §9).
    pub fn hash_json(&self) -> serde_json::Value {
        let rfc3339 = self
            .not_after
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        serde_json::json!({
            "algorithm": "sha-256",
            "hex": self.sha256_hex(),
            "base64": self.sha256_base64(),
            "not_after": rfc3339,
            "not_after_unix": self.not_after.unix_timestamp(),
        })
    }
}

fn sha256(der: &[u8]) -> [u8; 32] {
    Sha256::digest(der).into()
}

fn not_after_of(der: &[u8]) -> anyhow::Result<OffsetDateTime> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).context("parsing the certificate")?;
    Ok(cert.validity().not_after.to_datetime())
}

/// Loads a user-supplied PEM certificate chain and private key.
pub fn load_pem(cert: &Path, key: &Path) -> anyhow::Result<CertBundle> {
    let pem =
        fs::read(cert).with_context(|| format!("reading the certificate {}", cert.display()))?;
    let chain = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("reading certificates from {}", cert.display()))?;
    let Some(leaf) = chain.first() else {
        bail!("no certificate in {}", cert.display());
    };
    let key_pem =
        fs::read(key).with_context(|| format!("reading the private key {}", key.display()))?;
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .with_context(|| format!("reading the private key from {}", key.display()))?
        .with_context(|| format!("no private key in {}", key.display()))?;
    Ok(CertBundle {
        sha256: sha256(leaf),
        not_after: not_after_of(leaf)?,
        chain,
        key,
        dev: false,
    })
}

/// Where the development certificate lives in `dir`.
pub fn dev_paths(dir: &Path) -> (PathBuf, PathBuf) {
    (dir.join(DEV_CERT_FILE), dir.join(DEV_KEY_FILE))
}

/// Loads the development certificate from `dir`, creating it when missing,
/// unreadable or within `policy.renew_before` of expiry. Returns the bundle
/// and whether a new certificate was written.
pub fn load_or_create_dev(
    dir: &Path,
    now: OffsetDateTime,
    policy: DevCertPolicy,
) -> anyhow::Result<(CertBundle, bool)> {
    let (cert_path, key_path) = dev_paths(dir);
    if cert_path.exists() && key_path.exists() {
        match load_pem(&cert_path, &key_path) {
            Ok(mut bundle) if bundle.not_after - now > policy.renew_before => {
                bundle.dev = true;
                return Ok((bundle, false));
            }
            Ok(_) => tracing::info!("development certificate expires soon; renewing"),
            Err(e) => tracing::warn!("development certificate unreadable ({e:#}); replacing"),
        }
    }
    let bundle = generate_dev(now, policy.validity)?;
    write_dev(dir, &bundle)?;
    Ok((bundle, true))
}

/// Creates a new self-signed development certificate valid from a little
/// before `now` for `validity` in total (capped at 14 days).
pub fn generate_dev(now: OffsetDateTime, validity: Duration) -> anyhow::Result<CertBundle> {
    let validity = validity.min(MAX_DEV_CERT_VALIDITY);
    let mut params = rcgen::CertificateParams::new(vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ])?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Rally development certificate");
    // Whole seconds: X.509 times carry no fractions, and the validity must
    // not exceed the limit by a rounding error.
    let start = (now - backdate(validity)).replace_nanosecond(0)?;
    params.not_before = start;
    params.not_after = start + validity;
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let cert = params.self_signed(&key)?;
    let der = cert.der().clone();
    Ok(CertBundle {
        sha256: sha256(&der),
        not_after: params.not_after,
        chain: vec![der],
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        dev: true,
    })
}

/// Writes `bundle` as the development certificate in `dir`.
pub fn write_dev(dir: &Path, bundle: &CertBundle) -> anyhow::Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let (cert_path, key_path) = dev_paths(dir);
    let cert_pem = pem_block("CERTIFICATE", &bundle.chain[0]);
    let key_pem = pem_block("PRIVATE KEY", bundle.key.secret_der());
    // Write both to temporary names and rename, so a crash never leaves a
    // certificate paired with another certificate's key.
    let tmp_key = key_path.with_extension("key.tmp");
    let tmp_cert = cert_path.with_extension("pem.tmp");
    let writing = |p: &Path| format!("writing the development certificate {}", p.display());
    write_private(&tmp_key, key_pem.as_bytes()).with_context(|| writing(&key_path))?;
    fs::write(&tmp_cert, cert_pem).with_context(|| writing(&cert_path))?;
    fs::rename(&tmp_key, &key_path).with_context(|| writing(&key_path))?;
    fs::rename(&tmp_cert, &cert_path).with_context(|| writing(&cert_path))?;
    Ok(())
}

fn pem_block(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        // base64 output is ASCII.
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Writes a file readable only by its owner (mode 0600 on Unix).
fn write_private(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(data)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // The mode above only applies when the file is created.
        fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

/// The certificates the server presents: the current one, and during a
/// renewal overlap the next one, already published by hash. New TLS
/// handshakes (QUIC and TCP) get whatever is current at that moment; live
/// connections keep the certificate they started with.
#[derive(Debug)]
pub struct CertStore {
    // std RwLock: read on every handshake, written twice per renewal, never
    // held across .await.
    inner: std::sync::RwLock<CertState>,
}

#[derive(Debug)]
struct CertState {
    current: (CertBundle, Arc<CertifiedKey>),
    next: Option<CertBundle>,
}

fn certified(bundle: &CertBundle) -> anyhow::Result<Arc<CertifiedKey>> {
    let key = rustls::crypto::ring::sign::any_supported_type(&bundle.key)
        .context("unsupported private key type")?;
    Ok(Arc::new(CertifiedKey::new(bundle.chain.clone(), key)))
}

impl CertStore {
    pub fn new(bundle: CertBundle) -> anyhow::Result<Self> {
        let key = certified(&bundle)?;
        Ok(CertStore {
            inner: std::sync::RwLock::new(CertState {
                current: (bundle, key),
                next: None,
            }),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, CertState> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn current(&self) -> CertBundle {
        self.read().current.0.clone()
    }

    pub fn next(&self) -> Option<CertBundle> {
        self.read().next.clone()
    }

    /// Publishes the certificate that will replace the current one.
    pub fn set_next(&self, bundle: CertBundle) {
        self.inner.write().unwrap_or_else(|e| e.into_inner()).next = Some(bundle);
    }

    /// Makes the published next certificate current.
    pub fn promote(&self) -> anyhow::Result<Option<CertBundle>> {
        let mut st = self.inner.write().unwrap_or_else(|e| e.into_inner());
        let Some(next) = st.next.take() else {
            return Ok(None);
        };
        let key = certified(&next)?;
        st.current = (next.clone(), key);
        Ok(Some(next))
    }

    /// The `/cert-hash` body: the current certificate's fields at the top
    /// level, and `hashes` listing every certificate a client should accept
    /// now (current first, then the next one during a renewal overlap).
    pub fn hash_json(&self) -> serde_json::Value {
        let st = self.read();
        let mut v = st.current.0.hash_json();
        let mut hashes = vec![st.current.0.hash_json()];
        if let Some(next) = &st.next {
            hashes.push(next.hash_json());
        }
        v["hashes"] = serde_json::Value::Array(hashes);
        v
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.read().current.1.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_loads_and_renews_in_a_directory() {
        let dir = std::env::temp_dir().join(format!("rally-cert-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let now = OffsetDateTime::now_utc();
        let p = DevCertPolicy::default();
        let (first, created) = load_or_create_dev(&dir, now, p).unwrap();
        assert!(created);
        let (again, created) = load_or_create_dev(&dir, now, p).unwrap();
        assert!(!created, "a fresh certificate is reused");
        assert_eq!(first.sha256, again.sha256);
        // Twelve days later fewer than two days remain: renewed.
        let (renewed, created) = load_or_create_dev(&dir, now + Duration::days(12), p).unwrap();
        assert!(created);
        assert_ne!(renewed.sha256, first.sha256);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.join(DEV_KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        fs::remove_dir_all(&dir).unwrap();
    }
}
