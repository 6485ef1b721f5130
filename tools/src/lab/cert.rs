//! The certificate of the `h2-stream` row. HTTP/2 runs only on the
//! server's TLS listener, which needs a real certificate (`--cert/--key`):
//! the lab makes one per run, self-signed with rcgen (ECDSA P-256), whose
//! subject alternative names cover where the lab's server listens (the lab
//! address 198.18.0.1, and 127.0.0.1 for the loopback fallback). The lab
//! client trusts exactly that certificate as its only root and verifies
//! the server by it (name and signature), as a browser verifies a server
//! against its roots: nothing is skipped, and no other certificate would
//! do. (Not the development certificate: the server serves that over plain
//! HTTP, and its names are localhost and loopback only.)

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use rustls::pki_types::{pem::PemObject, CertificateDer};

/// A certificate and key written as PEM files.
#[derive(Debug, Clone)]
pub struct LabCert {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Makes a self-signed certificate for `addrs` (and `localhost`) in `dir`.
pub fn generate(dir: &Path, addrs: &[IpAddr]) -> anyhow::Result<LabCert> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut names = vec!["localhost".to_string()];
    names.extend(addrs.iter().map(IpAddr::to_string));
    // rcgen makes a name that parses as an address an IP address SAN.
    let mut params = rcgen::CertificateParams::new(names)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Rally transport lab");
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let cert = params.self_signed(&key)?;
    let out = LabCert {
        cert: dir.join("lab.pem"),
        key: dir.join("lab.key"),
    };
    std::fs::write(&out.cert, cert.pem())
        .with_context(|| format!("writing {}", out.cert.display()))?;
    write_private(&out.key, key.serialize_pem().as_bytes())
        .with_context(|| format!("writing {}", out.key.display()))?;
    Ok(out)
}

/// Writes a file only its owner can read (the key).
fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?
        .write_all(data)
}

/// A TLS client configuration whose only root is the certificate in the
/// PEM file `ca`, offering ALPN `alpn`.
pub fn client_config(ca: &Path, alpn: &[&[u8]]) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    for der in
        CertificateDer::pem_file_iter(ca).with_context(|| format!("reading {}", ca.display()))?
    {
        roots
            .add(der.with_context(|| format!("parsing {}", ca.display()))?)
            .context("adding the lab certificate as a root")?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lab_certificate_is_a_root_the_client_config_accepts() {
        let dir = std::env::temp_dir().join(format!(
            "rally-lab-cert-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        let c = generate(&dir, &["198.18.0.1".parse().unwrap()]).unwrap();
        let cfg = client_config(&c.cert, &[b"h2"]).unwrap();
        assert_eq!(cfg.alpn_protocols, vec![b"h2".to_vec()]);
        let key = std::fs::read_to_string(&c.key).unwrap();
        assert!(key.contains("PRIVATE KEY"));
        let _ = std::fs::remove_dir_all(dir);
    }
}
