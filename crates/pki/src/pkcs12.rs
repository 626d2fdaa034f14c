//! PKCS#12 keystores for Java and other PKCS#12 consumers (README "Beyond the original",
//! `service-ca.dev/formats: keystore.p12,truststore.p12`).
//!
//! Both stores are written with the JDK's own modern defaults (PBES2: PBKDF2-HMAC-SHA256 and
//! AES-256-CBC for the bags, an HMAC-SHA256 MAC, 10,000 iterations each), which OpenSSL 3 and JDK
//! 17's `keytool` read; the legacy RC2/3DES schemes are never used. The salts and IVs are random,
//! so two stores built from the same inputs differ byte-for-byte: whether a store in a Secret is
//! current is judged from [`store_digest`] and [`password_hash`], never by rebuilding it.

use aws_lc_rs::digest;
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::KeyPair as RsaKeyPair;
use aws_lc_rs::signature::EcdsaKeyPair;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_P384_SHA384_ASN1_SIGNING};
use p12_keystore::{Certificate, KeyStore, KeyStoreEntry, PrivateKeyChain};
use zeroize::Zeroizing;

use crate::PkiError;
use crate::inspect::pem_cert_ders;

/// The password of a store when the Service names none: the JDK's default truststore password,
/// which Java tooling and users already expect (cert-manager documents the same default).
pub const DEFAULT_STORE_PASSWORD: &str = "changeit";

/// Alias (PKCS#12 friendlyName) of the private-key entry of `keystore.p12`.
pub const KEYSTORE_ALIAS: &str = "tls";

/// Alias of the `i`-th CA certificate of `truststore.p12`: `ca`, `ca-1`, `ca-2`, … (one CA is the
/// usual case, and `ca` is what cert-manager's truststores use too).
pub fn truststore_alias(i: usize) -> String {
    if i == 0 {
        "ca".to_string()
    } else {
        format!("ca-{i}")
    }
}

/// Key-derivation iterations for the bags and the MAC (the JDK's defaults).
const ITERATIONS: u32 = 10_000;

fn p12_error(what: &str, e: impl std::fmt::Display) -> PkiError {
    PkiError::Pkcs12(format!("{what}: {e}"))
}

/// `keystore.p12`: the private key and the certificate chain (leaf first, as in `tls.crt`) under
/// the alias [`KEYSTORE_ALIAS`], encrypted and MACed with `password`.
pub fn keystore_p12(chain_pem: &[u8], key_pem: &[u8], password: &str) -> Result<Vec<u8>, PkiError> {
    let ders = pem_cert_ders(chain_pem)?;
    let Some(leaf) = ders.first() else {
        return Err(PkiError::NoCertificate("tls.crt"));
    };
    let certs = ders
        .iter()
        .map(|d| Certificate::from_der(d).map_err(|e| p12_error("certificate", e)))
        .collect::<Result<Vec<_>, _>>()?;
    let pkcs8 = pkcs8_der(key_pem)?;
    let key =
        p12_keystore::PrivateKey::from_der(&pkcs8).map_err(|e| p12_error("private key", e))?;
    // The localKeyId ties the key bag to its certificate bag; a digest of the leaf is what
    // OpenSSL and keytool use too (any value unique within the file works).
    let local_key_id = digest::digest(&digest::SHA256, leaf).as_ref()[..20].to_vec();
    let mut store = KeyStore::new();
    store.add_entry(
        KEYSTORE_ALIAS,
        KeyStoreEntry::PrivateKeyChain(PrivateKeyChain::new(local_key_id, key, certs)),
    );
    write(&store, password)
}

/// `truststore.p12`: every certificate of the CA bundle as a trusted certificate entry (Java's
/// `trustedCertEntry`), aliases from [`truststore_alias`], encrypted and MACed with `password`.
pub fn truststore_p12(bundle_pem: &[u8], password: &str) -> Result<Vec<u8>, PkiError> {
    let ders = pem_cert_ders(bundle_pem)?;
    if ders.is_empty() {
        return Err(PkiError::NoCertificate("the CA bundle"));
    }
    let mut store = KeyStore::new();
    for (i, der) in ders.iter().enumerate() {
        let cert = Certificate::from_der(der).map_err(|e| p12_error("CA certificate", e))?;
        store.add_entry(&truststore_alias(i), KeyStoreEntry::Certificate(cert));
    }
    write(&store, password)
}

fn write(store: &KeyStore, password: &str) -> Result<Vec<u8>, PkiError> {
    store
        .writer(password)
        .encryption_algorithm(p12_keystore::EncryptionAlgorithm::PbeWithHmacSha256AndAes256)
        .encryption_iterations(ITERATIONS)
        .mac_algorithm(p12_keystore::MacAlgorithm::HmacSha256)
        .mac_iterations(ITERATIONS)
        .write()
        .map_err(|e| p12_error("encoding PKCS#12", e))
}

/// The PKCS#8 `PrivateKeyInfo` DER of a PEM key (PKCS#8 as is; PKCS#1 RSA and SEC1 EC keys, the
/// forms service-ca generates, re-encoded): PKCS#12 key bags hold PKCS#8 only.
fn pkcs8_der(key_pem: &[u8]) -> Result<Zeroizing<Vec<u8>>, PkiError> {
    let invalid = |e: &dyn std::fmt::Display| PkiError::InvalidKey(e.to_string());
    let block = pem::parse(key_pem).map_err(|e| invalid(&e))?;
    let der = Zeroizing::new(block.contents().to_vec());
    match block.tag() {
        "PRIVATE KEY" => Ok(der),
        "RSA PRIVATE KEY" => {
            let pair = RsaKeyPair::from_der(&der).map_err(|e| invalid(&e))?;
            let pkcs8 = pair.as_der().map_err(|e| invalid(&e))?;
            Ok(Zeroizing::new(pkcs8.as_ref().to_vec()))
        }
        "EC PRIVATE KEY" => {
            let pair = EcdsaKeyPair::from_private_key_der(&ECDSA_P256_SHA256_ASN1_SIGNING, &der)
                .or_else(|_| {
                    EcdsaKeyPair::from_private_key_der(&ECDSA_P384_SHA384_ASN1_SIGNING, &der)
                })
                .map_err(|e| invalid(&e))?;
            let pkcs8 = pair.to_pkcs8v1().map_err(|e| invalid(&e))?;
            Ok(Zeroizing::new(pkcs8.as_ref().to_vec()))
        }
        other => Err(PkiError::InvalidKey(format!(
            "unexpected PEM block {other:?}"
        ))),
    }
}

/// A short digest (128 bits, hex) of `parts`, each length-prefixed so that no two different
/// lists collide by concatenation. Recorded on the Secret next to a store, over the store's inputs
/// and the store's own bytes: a store that no longer matches its inputs, or was changed by someone
/// else, is rebuilt, without decrypting it.
pub fn store_digest(parts: &[&[u8]]) -> String {
    let mut ctx = digest::Context::new(&digest::SHA256);
    for part in parts {
        ctx.update(&(part.len() as u64).to_be_bytes());
        ctx.update(part);
    }
    hex16(ctx.finish().as_ref())
}

/// A short, salted digest of a store password (128 bits, hex), recorded on the Secret so that a
/// changed password is noticed without decrypting the stores. Never the password itself; the salt
/// (the Secret's namespace and name) keeps one password from having the same digest everywhere.
pub fn password_hash(salt: &str, password: &str) -> String {
    store_digest(&[
        b"service-ca.dev/keystore-password",
        salt.as_bytes(),
        password.as_bytes(),
    ])
}

fn hex16(bytes: &[u8]) -> String {
    bytes[..16].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        CaConfig, ChainOrder, KeyAlgorithm, ServingRequest, SigningCa, generate_key, issue_serving,
    };
    use p12_keystore::Pkcs12ImportPolicy;
    use std::path::Path;
    use std::process::Command;
    use std::time::Duration;
    use time::macros::datetime;

    const NOW: time::OffsetDateTime = datetime!(2026-11-29 12:00 UTC);

    struct Issued {
        ca: SigningCa,
        chain: String,
        key: String,
    }

    fn issue(alg: KeyAlgorithm, order: ChainOrder) -> Issued {
        let ca = SigningCa::create(
            &CaConfig {
                key_algorithm: KeyAlgorithm::EcdsaP256,
                ..CaConfig::default()
            },
            NOW,
        )
        .unwrap();
        let issued = issue_serving(
            &ca,
            &ServingRequest {
                service: "api",
                namespace: "shop",
                uid: "6f1c1d2e-0000-4000-8000-000000000001",
                headless: false,
                cluster_domain: "cluster.local",
                lifetime: Duration::from_secs(86400 * 30),
                chain_order: order,
                extra_dns_names: &[],
            },
            generate_key(alg).unwrap(),
            NOW,
        )
        .unwrap();
        Issued {
            ca,
            chain: issued.cert_chain_pem,
            key: issued.key_pem.to_string(),
        }
    }

    /// A rotated CA: its bundle holds more than one certificate.
    fn rotated_bundle() -> String {
        let cfg = CaConfig {
            key_algorithm: KeyAlgorithm::EcdsaP256,
            ..CaConfig::default()
        };
        let ca = SigningCa::create(&cfg, NOW).unwrap();
        let rotation = ca.rotate(&cfg, NOW + time::Duration::days(400)).unwrap();
        rotation.ca.bundle_pem()
    }

    #[test]
    fn keystore_round_trip_every_key_algorithm() {
        for alg in [
            KeyAlgorithm::EcdsaP256,
            KeyAlgorithm::EcdsaP384,
            KeyAlgorithm::Rsa2048,
        ] {
            let i = issue(alg, ChainOrder::Portable);
            let p12 = keystore_p12(i.chain.as_bytes(), i.key.as_bytes(), "s3cret").unwrap();
            let store = KeyStore::from_pkcs12(&p12, "s3cret", Pkcs12ImportPolicy::Strict).unwrap();
            let (alias, chain) = store.private_key_chain().unwrap();
            assert_eq!(alias, KEYSTORE_ALIAS, "{alg:?}");
            let want = pem_cert_ders(i.chain.as_bytes()).unwrap();
            let got: Vec<&[u8]> = chain.certs().iter().map(|c| c.as_der()).collect();
            assert_eq!(got, want.iter().map(Vec::as_slice).collect::<Vec<_>>());
            // The key is the same key: PKCS#8 of what tls.key holds.
            assert_eq!(
                chain.key().as_der(),
                pkcs8_der(i.key.as_bytes()).unwrap().as_slice()
            );
            assert!(KeyStore::from_pkcs12(&p12, "changeit", Pkcs12ImportPolicy::Strict).is_err());
        }
    }

    #[test]
    fn truststore_round_trip_holds_every_bundle_certificate() {
        let bundle = rotated_bundle();
        let want = pem_cert_ders(bundle.as_bytes()).unwrap();
        assert!(want.len() >= 2, "a rotated bundle has several CAs");
        let p12 = truststore_p12(bundle.as_bytes(), DEFAULT_STORE_PASSWORD).unwrap();
        let store = KeyStore::from_pkcs12(&p12, DEFAULT_STORE_PASSWORD, Pkcs12ImportPolicy::Strict)
            .unwrap();
        let mut got: Vec<(String, Vec<u8>)> = store
            .entries()
            .map(|(alias, e)| match e {
                KeyStoreEntry::Certificate(c) => (alias.clone(), c.as_der().to_vec()),
                other => panic!("unexpected entry {other:?}"),
            })
            .collect();
        got.sort();
        let mut expected: Vec<(String, Vec<u8>)> = want
            .into_iter()
            .enumerate()
            .map(|(i, d)| (truststore_alias(i), d))
            .collect();
        expected.sort();
        assert_eq!(got, expected);
    }

    #[test]
    fn refuses_what_it_cannot_encode() {
        let i = issue(KeyAlgorithm::EcdsaP256, ChainOrder::Portable);
        assert!(matches!(
            keystore_p12(b"", i.key.as_bytes(), "x"),
            Err(PkiError::NoCertificate(_))
        ));
        assert!(matches!(
            keystore_p12(i.chain.as_bytes(), b"not a key", "x"),
            Err(PkiError::InvalidKey(_))
        ));
        assert!(matches!(
            keystore_p12(i.chain.as_bytes(), i.chain.as_bytes(), "x"),
            Err(PkiError::InvalidKey(_))
        ));
        assert!(matches!(
            truststore_p12(b"", "x"),
            Err(PkiError::NoCertificate(_))
        ));
    }

    #[test]
    fn digests_are_short_stable_and_unambiguous() {
        let d = store_digest(&[b"ab", b"c"]);
        assert_eq!(d.len(), 32);
        assert!(d.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(d, store_digest(&[b"ab", b"c"]));
        assert_ne!(d, store_digest(&[b"a", b"bc"]));
        let h = password_hash("shop/api-tls", "changeit");
        assert_eq!(h, password_hash("shop/api-tls", "changeit"));
        assert_ne!(h, password_hash("shop/other-tls", "changeit"));
        assert_ne!(h, password_hash("shop/api-tls", "changeit2"));
        assert!(!h.contains("changeit"));
    }

    fn tool(program: &str) -> Command {
        Command::new(program)
    }

    fn run(cmd: &mut Command) -> (bool, String) {
        let out = cmd
            .output()
            .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} (openssl is required)"));
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        (out.status.success(), text)
    }

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("service-ca-pkcs12-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn write_stores(dir: &Path, password: &str) -> Issued {
        let i = issue(KeyAlgorithm::EcdsaP256, ChainOrder::Portable);
        let ks = keystore_p12(i.chain.as_bytes(), i.key.as_bytes(), password).unwrap();
        let ts = truststore_p12(i.ca.bundle_pem().as_bytes(), password).unwrap();
        std::fs::write(dir.join("keystore.p12"), ks).unwrap();
        std::fs::write(dir.join("truststore.p12"), ts).unwrap();
        i
    }

    /// OpenSSL 3 reads both stores with the password (and not without it): MAC, PBES2 bags,
    /// certificates and key. openssl is required (the test fails, not skips, without it).
    #[test]
    fn openssl_reads_both_stores() {
        let dir = temp_dir("openssl");
        let i = write_stores(&dir, "pa ss");
        let ks = dir.join("keystore.p12");
        let ts = dir.join("truststore.p12");
        let (ok, info) = run(tool("openssl")
            .args(["pkcs12", "-info", "-nokeys", "-passin", "pass:pa ss", "-in"])
            .arg(&ks));
        assert!(ok, "{info}");
        assert!(info.contains("MAC: sha256"), "{info}");
        assert!(info.contains("PBES2, PBKDF2, AES-256-CBC"), "{info}");
        assert!(info.contains("localKeyID"), "{info}");
        // The key itself comes out equal to tls.key.
        let (ok, key) = run(tool("openssl")
            .args([
                "pkcs12",
                "-nocerts",
                "-nodes",
                "-passin",
                "pass:pa ss",
                "-in",
            ])
            .arg(&ks));
        assert!(ok, "{key}");
        assert!(key.contains("friendlyName: tls"), "{key}");
        let out_key = dir.join("out.key");
        std::fs::write(&out_key, &key).unwrap();
        let (ok, a) = run(tool("openssl")
            .args(["pkey", "-pubout", "-in"])
            .arg(&out_key));
        assert!(ok, "{a}");
        let tls_key = dir.join("tls.key");
        std::fs::write(&tls_key, &i.key).unwrap();
        let (ok, b) = run(tool("openssl")
            .args(["pkey", "-pubout", "-in"])
            .arg(&tls_key));
        assert!(ok, "{b}");
        assert_eq!(a, b);
        let (ok, info) = run(tool("openssl")
            .args(["pkcs12", "-info", "-nokeys", "-passin", "pass:pa ss", "-in"])
            .arg(&ts));
        assert!(ok, "{info}");
        assert!(info.contains("friendlyName: ca"), "{info}");
        assert!(info.contains(&i.ca.subject_cn()), "{info}");
        let (ok, info) = run(tool("openssl")
            .args([
                "pkcs12",
                "-info",
                "-nokeys",
                "-passin",
                "pass:changeit",
                "-in",
            ])
            .arg(&ts));
        assert!(!ok, "wrong password accepted: {info}");
        std::fs::remove_dir_all(&dir).ok();
    }

    /// JDK 17's keytool sees a PrivateKeyEntry and trustedCertEntry records. Skipped only when no
    /// JDK is installed, and says so.
    #[test]
    fn keytool_lists_both_stores() {
        if Command::new("keytool").arg("-help").output().is_err() {
            eprintln!("SKIPPED keytool_lists_both_stores: no JDK (keytool) on PATH");
            return;
        }
        let dir = temp_dir("keytool");
        write_stores(&dir, "s3cret!");
        let list = |file: &str, pass: &str| {
            run(tool("keytool")
                .args([
                    "-list",
                    "-v",
                    "-storetype",
                    "PKCS12",
                    "-storepass",
                    pass,
                    "-keystore",
                ])
                .arg(dir.join(file)))
        };
        let (ok, out) = list("keystore.p12", "s3cret!");
        assert!(ok, "{out}");
        assert!(out.contains("Alias name: tls"), "{out}");
        assert!(out.contains("PrivateKeyEntry"), "{out}");
        assert!(out.contains("Certificate chain length: 2"), "{out}");
        let (ok, out) = list("truststore.p12", "s3cret!");
        assert!(ok, "{out}");
        assert!(out.contains("Alias name: ca"), "{out}");
        assert!(out.contains("trustedCertEntry"), "{out}");
        let (ok, out) = list("truststore.p12", "changeit");
        assert!(!ok, "wrong password accepted: {out}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
