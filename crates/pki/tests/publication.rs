//! Canonical publication: certificate fields of an adopted CA Secret are refused if they hold
//! non-certificate PEM blocks, and everything published is re-encoded from DER.

mod common;
use common::*;
use service_ca_pki::*;

/// Independent re-implementation of Go's `encoding/pem.Encode` for a header-less block:
/// `-----BEGIN T-----\n`, standard padded base64 in 64-character lines each ending in `\n`,
/// `-----END T-----\n`.
fn go_pem_encode(label: &str, der: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = String::new();
    for chunk in der.chunks(3) {
        let n = chunk.len();
        let v = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= n {
                b64.push(ALPHABET[((v >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                b64.push('=');
            }
        }
    }
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn go_certs(ders: &[Vec<u8>]) -> String {
    ders.iter()
        .map(|d| go_pem_encode("CERTIFICATE", d))
        .collect()
}

/// The four certificate texts of a rotated CA, as Go would write them.
struct GoSecret {
    tls_crt: String,
    tls_key: String,
    bundle: String,
    intermediate: String,
}

fn rotated_go_secret() -> GoSecret {
    let t = now();
    let ca = SigningCa::create(&CaConfig::default(), t).unwrap();
    let rot = ca.rotate(&CaConfig::default(), t).unwrap();
    GoSecret {
        tls_crt: go_certs(&ders(&rot.ca.tls_crt_pem())),
        tls_key: rot.ca.tls_key_pem().to_string(),
        bundle: go_certs(&ders(&rot.ca.ca_bundle_pem().unwrap())),
        intermediate: go_certs(&ders(&rot.ca.intermediate_pem().unwrap())),
    }
}

fn adopt(
    tls_crt: &str,
    tls_key: &str,
    bundle: Option<&str>,
    inter: Option<&str>,
) -> Result<SigningCa, PkiError> {
    SigningCa::from_secret_data(
        tls_crt.as_bytes(),
        tls_key.as_bytes(),
        bundle.map(str::as_bytes),
        inter.map(str::as_bytes),
        now(),
    )
}

#[test]
fn go_encoded_secret_round_trips_byte_identical() {
    let g = rotated_go_secret();
    // Sanity check of the test encoder: a bundle is two blocks, no blank line between them.
    assert_eq!(g.bundle.matches("-----BEGIN CERTIFICATE-----\n").count(), 2);
    assert!(
        g.bundle
            .contains("-----END CERTIFICATE-----\n-----BEGIN CERTIFICATE-----\n")
    );
    assert!(g.bundle.lines().all(|l| l.len() <= 64));
    let ca = adopt(
        &g.tls_crt,
        &g.tls_key,
        Some(&g.bundle),
        Some(&g.intermediate),
    )
    .unwrap();
    assert_eq!(ca.tls_crt_pem(), g.tls_crt);
    assert_eq!(ca.ca_bundle_pem().unwrap(), g.bundle);
    assert_eq!(ca.bundle_pem(), g.bundle);
    assert_eq!(ca.intermediate_pem().unwrap(), g.intermediate);
    assert_eq!(*ca.tls_key_pem(), g.tls_key, "key PEM kept byte-for-byte");
    // Before any rotation the bundle is tls.crt itself.
    let fresh = SigningCa::create(&CaConfig::default(), now()).unwrap();
    let crt = go_certs(&ders(&fresh.tls_crt_pem()));
    let ca = adopt(&crt, &fresh.tls_key_pem(), None, None).unwrap();
    assert_eq!(ca.tls_crt_pem(), crt);
    assert_eq!(ca.bundle_pem(), crt);
    assert_eq!(ca.ca_bundle_pem(), None);
    assert_eq!(ca.intermediate_pem(), None);
    // Our own canonical encoding is the same as Go's.
    assert_eq!(fresh.tls_crt_pem(), crt);
}

#[test]
fn openssl_encoded_certificate_round_trips() {
    require_openssl();
    let ca = SigningCa::create(&CaConfig::default(), now()).unwrap();
    let dir = tmpdir("pubossl");
    let der = dir.join("c.der");
    std::fs::write(&der, &ders(&ca.tls_crt_pem())[0]).unwrap();
    let out = std::process::Command::new("openssl")
        .args(["x509", "-inform", "DER", "-outform", "PEM", "-in"])
        .arg(&der)
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let adopted = adopt(&text, &ca.tls_key_pem(), None, None).unwrap();
    assert_eq!(adopted.tls_crt_pem(), text);
}

#[test]
fn non_canonical_input_is_republished_canonically() {
    let g = rotated_go_secret();
    let mangle = |s: &str| {
        let mut out = String::from("# exported by hand\nsecret-looking words outside blocks\n\n");
        out.push_str(&s.replace('\n', "\r\n").replace(
            "-----END CERTIFICATE-----\r\n",
            "-----END CERTIFICATE-----\r\n\r\n",
        ));
        out.push_str("trailing comment\n");
        out
    };
    let ca = adopt(
        &mangle(&g.tls_crt),
        &g.tls_key,
        Some(&mangle(&g.bundle)),
        Some(&mangle(&g.intermediate)),
    )
    .unwrap();
    assert_eq!(ca.tls_crt_pem(), g.tls_crt);
    assert_eq!(ca.bundle_pem(), g.bundle);
    assert_eq!(ca.intermediate_pem().unwrap(), g.intermediate);
    for published in [
        ca.tls_crt_pem(),
        ca.bundle_pem(),
        ca.intermediate_pem().unwrap(),
    ] {
        assert!(!published.contains("secret-looking"));
        assert!(!published.contains('#'));
        assert!(!published.contains('\r'));
    }
}

#[test]
fn private_key_in_certificate_fields_is_refused() {
    let g = rotated_go_secret();
    let ec = generate_key(KeyAlgorithm::EcdsaP256).unwrap();
    let rsa_pkcs1 = g.tls_key.clone();
    assert!(rsa_pkcs1.starts_with("-----BEGIN RSA PRIVATE KEY-----"));
    let pkcs8 = go_pem_encode("PRIVATE KEY", &[0x30, 0x03, 0x02, 0x01, 0x00]);
    let encrypted = go_pem_encode("ENCRYPTED PRIVATE KEY", &[0x30, 0x00]);
    let keys: [(&str, String); 4] = [
        ("RSA PRIVATE KEY", rsa_pkcs1.clone()),
        ("EC PRIVATE KEY", ec.pem().to_string()),
        ("PRIVATE KEY", pkcs8),
        ("ENCRYPTED PRIVATE KEY", encrypted),
    ];
    let body_line = |k: &str| k.lines().nth(1).unwrap().to_string();
    for (label, key) in &keys {
        for field in ["tls.crt", "ca-bundle.crt", "intermediate-ca.crt"] {
            // The key before or after the certificates.
            for key_first in [false, true] {
                let with_key = |certs: &str| {
                    if key_first {
                        format!("{key}{certs}")
                    } else {
                        format!("{certs}{key}")
                    }
                };
                let (crt, bundle, inter) = match field {
                    "tls.crt" => (
                        with_key(&g.tls_crt),
                        g.bundle.clone(),
                        g.intermediate.clone(),
                    ),
                    "ca-bundle.crt" => (
                        g.tls_crt.clone(),
                        with_key(&g.bundle),
                        g.intermediate.clone(),
                    ),
                    _ => (
                        g.tls_crt.clone(),
                        g.bundle.clone(),
                        with_key(&g.intermediate),
                    ),
                };
                let e = adopt(&crt, &g.tls_key, Some(&bundle), Some(&inter)).unwrap_err();
                assert_eq!(e.category(), "non_certificate_pem", "{field} {label}: {e}");
                match &e {
                    PkiError::NonCertificateInCertField { field: f, label: l } => {
                        assert_eq!(f, &field);
                        assert_eq!(l, label);
                    }
                    other => panic!("unexpected {other:?}"),
                }
                let msg = e.to_string();
                assert!(msg.contains(field), "{msg}");
                assert!(msg.contains(label), "{msg}");
                assert!(msg.contains("remove"), "{msg}");
                assert!(
                    !msg.contains(&body_line(key)),
                    "the key never appears in the error"
                );
            }
        }
    }
    // A key-only tls.crt is refused the same way (not "no certificate").
    let e = adopt(&rsa_pkcs1, &g.tls_key, None, None).unwrap_err();
    assert_eq!(e.category(), "non_certificate_pem");
    // Other non-certificate labels too.
    let crl = go_pem_encode("X509 CRL", &[0x30, 0x00]);
    let e = adopt(&format!("{}{crl}", g.tls_crt), &g.tls_key, None, None).unwrap_err();
    assert_eq!(e.category(), "non_certificate_pem");
}
