//! Shared test helpers: issuing, openssl CLI wrappers, webpki verification with a chosen time, rustls handshakes.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use service_ca_pki::*;
use time::OffsetDateTime;

pub const DAY: Duration = Duration::from_secs(86_400);

pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

pub fn now() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(OffsetDateTime::now_utc().unix_timestamp()).unwrap()
}

pub fn req<'a>(svc: &'a str, ns: &'a str, headless: bool, order: ChainOrder) -> ServingRequest<'a> {
    ServingRequest {
        service: svc,
        namespace: ns,
        uid: "0b7c2f5e-1d3a-4c8e-9f6a-2b1c3d4e5f60",
        headless,
        cluster_domain: "cluster.local",
        lifetime: DEFAULT_SERVING_LIFETIME,
        chain_order: order,
        extra_dns_names: &[],
    }
}

pub fn issue(
    ca: &SigningCa,
    svc: &str,
    ns: &str,
    order: ChainOrder,
    at: OffsetDateTime,
) -> IssuedCert {
    let key = generate_key(KeyAlgorithm::Rsa2048).unwrap();
    issue_serving(ca, &req(svc, ns, false, order), key, at).unwrap()
}

pub fn ders(pem_text: &str) -> Vec<Vec<u8>> {
    pem_cert_ders(pem_text.as_bytes()).unwrap()
}

/// Verify a chain like a rustls client would, at a chosen time.
pub fn webpki_verify(
    bundle: &str,
    chain: &str,
    host: &str,
    at: OffsetDateTime,
) -> Result<(), String> {
    let mut roots = rustls::RootCertStore::empty();
    for d in ders(bundle) {
        roots
            .add(CertificateDer::from(d))
            .map_err(|e| e.to_string())?;
    }
    let verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| e.to_string())?;
    let chain = ders(chain);
    let ee = CertificateDer::from(chain[0].clone());
    let rest: Vec<CertificateDer<'static>> = chain[1..]
        .iter()
        .cloned()
        .map(CertificateDer::from)
        .collect();
    let name = ServerName::try_from(host.to_string()).map_err(|e| e.to_string())?;
    let t = UnixTime::since_unix_epoch(Duration::from_secs(at.unix_timestamp() as u64));
    use rustls::client::danger::ServerCertVerifier;
    verifier
        .verify_server_cert(&ee, &rest, &name, &[], t)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// The openssl CLI cross-checks are part of the suite: without `openssl` on PATH they fail (they
/// never pass by skipping). `make test` checks for it up front and `.ci/run` installs it.
pub fn require_openssl() {
    let found = Command::new("openssl")
        .arg("version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        found,
        "the openssl CLI is required for this cross-check and is not on PATH: install it \
         (apt-get install openssl); `make test` checks for it and `.ci/run` installs it"
    );
}

static SEQ: AtomicUsize = AtomicUsize::new(0);

pub fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "pki-test-{}-{}-{}",
        std::process::id(),
        tag,
        SEQ.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub fn write(dir: &Path, name: &str, content: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, content).unwrap();
    p
}

/// Split a chain PEM into (leaf PEM, rest PEM).
pub fn split_chain(chain: &str) -> (String, String) {
    let d = ders(chain);
    (
        cert_pem(&d[0]),
        d[1..].iter().map(|x| cert_pem(x)).collect(),
    )
}

/// `openssl verify -CAfile bundle -untrusted rest leaf` (optionally -attime, -verify_hostname).
pub fn openssl_verify(
    bundle: &str,
    chain: &str,
    host: Option<&str>,
    at: Option<OffsetDateTime>,
) -> Result<(), String> {
    let dir = tmpdir("verify");
    let (leaf, rest) = split_chain(chain);
    let b = write(&dir, "bundle.pem", bundle);
    let l = write(&dir, "leaf.pem", &leaf);
    let mut cmd = Command::new("openssl");
    cmd.arg("verify").arg("-CAfile").arg(&b);
    if !rest.is_empty() {
        cmd.arg("-untrusted").arg(write(&dir, "rest.pem", &rest));
    }
    if let Some(h) = host {
        cmd.arg("-verify_hostname").arg(h);
    }
    if let Some(t) = at {
        cmd.arg("-attime").arg(t.unix_timestamp().to_string());
    }
    cmd.arg(&l);
    let out = cmd.output().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() && text.contains(": OK") {
        Ok(())
    } else {
        Err(text)
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Run `openssl s_server` with the chain and key, then `openssl s_client` trusting only `bundle`.
pub fn openssl_handshake(bundle: &str, chain: &str, key: &str, host: &str) -> Result<(), String> {
    let dir = tmpdir("sclient");
    let (leaf, rest) = split_chain(chain);
    let l = write(&dir, "leaf.pem", &leaf);
    let r = write(&dir, "rest.pem", &rest);
    let k = write(&dir, "key.pem", key);
    let b = write(&dir, "bundle.pem", bundle);
    let port = free_port();
    let mut server = Command::new("openssl")
        .args(["s_server", "-quiet", "-accept"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("-cert")
        .arg(&l)
        .arg("-cert_chain")
        .arg(&r)
        .arg("-key")
        .arg(&k)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut ready = false;
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            ready = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let result = if !ready {
        Err("s_server did not start".to_string())
    } else {
        let mut client = Command::new("openssl")
            .args(["s_client", "-connect"])
            .arg(format!("127.0.0.1:{port}"))
            .args([
                "-servername",
                host,
                "-verify_hostname",
                host,
                "-verify_return_error",
                "-CAfile",
            ])
            .arg(&b)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(client.stdin.take());
        let mut out = String::new();
        let mut err = String::new();
        client
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        client
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        let status = client.wait().unwrap();
        if status.success() && out.contains("Verify return code: 0 (ok)") {
            Ok(())
        } else {
            Err(format!(
                "{err}\n{}",
                out.lines()
                    .filter(|l| l.contains("erif"))
                    .collect::<Vec<_>>()
                    .join("\n")
            ))
        }
    };
    let _ = server.stdin.as_mut().map(|s| s.write_all(b"Q\n"));
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// A real TLS handshake over 127.0.0.1 with rustls on both sides (client trusts only `bundle`).
pub async fn rustls_handshake(
    bundle: &str,
    chain: &str,
    key: &str,
    host: &str,
) -> Result<(), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let certs: Vec<CertificateDer<'static>> =
        ders(chain).into_iter().map(CertificateDer::from).collect();
    let key: PrivateKeyDer<'static> =
        PrivateKeyDer::from_pem_slice(key.as_bytes()).map_err(|e| e.to_string())?;
    let server_cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| e.to_string())?;
    let mut roots = rustls::RootCertStore::empty();
    for d in ders(bundle) {
        roots
            .add(CertificateDer::from(d))
            .map_err(|e| e.to_string())?;
    }
    let client_cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_cfg));
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.map_err(|e| e.to_string())?;
        let mut tls = acceptor.accept(tcp).await.map_err(|e| e.to_string())?;
        let mut buf = [0u8; 4];
        tls.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
        tls.write_all(b"pong").await.map_err(|e| e.to_string())?;
        tls.shutdown().await.ok();
        Ok::<(), String>(())
    });
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_cfg));
    let name = ServerName::try_from(host.to_string()).map_err(|e| e.to_string())?;
    let client = async {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        let mut tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        tls.write_all(b"ping").await.map_err(|e| e.to_string())?;
        let mut buf = [0u8; 4];
        tls.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
        if &buf != b"pong" {
            return Err("bad reply".to_string());
        }
        Ok(())
    };
    let res = client.await;
    if res.is_err() {
        server.abort();
    } else {
        server.await.map_err(|e| e.to_string())??;
    }
    res
}
