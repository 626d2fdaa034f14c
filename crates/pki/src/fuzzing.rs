//! Entry points of the fuzz targets under `fuzz/` (docs/reliability.md, "Fuzzing"). Not an API.
//!
//! Each function takes bytes as they could arrive from the cluster and must not panic on any
//! input; its `assert!`s state what the rest of the code relies on (what is published is
//! canonical, a key that parses can sign, a certificate issued by a loaded CA passes the reuse
//! check). The fuzz targets call these functions, and the tests replay the committed corpus
//! through the same functions with [`run_corpus`], so whatever the fuzzer found stays fixed.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use time::OffsetDateTime;

use crate::{
    CaConfig, CertInfo, ChainOrder, KeyAlgorithm, PrivateKey, ServingRequest, SigningCa, cert_pem,
    generate_key, issue_serving, parse_pem_certs, pem_cert_ders, serving_dns_names,
    verify_serving_secret,
};

/// The clock of every target (2026-05-28T20:26:40Z): fixed, so an input behaves the same in the
/// fuzzer and in the replay.
pub fn now() -> OffsetDateTime {
    OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(1_780_000_000)
}

/// A CA configuration whose rotation is cheap (ECDSA P-256 keys): the targets rotate often.
pub fn fast_ca_config() -> CaConfig {
    CaConfig {
        key_algorithm: KeyAlgorithm::EcdsaP256,
        ..CaConfig::default()
    }
}

/// UID of the Service every target issues for.
pub const SERVICE_UID: &str = "0b7c2f5e-1d3a-4c8e-9f6a-2b1c3d4e5f60";

/// Target `pem_bundle`: a PEM text as found in `tls.crt`, `ca-bundle.crt` or an injected bundle.
pub fn pem_bundle(data: &[u8]) {
    let ders = pem_cert_ders(data);
    let parsed = parse_pem_certs(data);
    if let Ok(infos) = &parsed {
        let ders = ders
            .as_ref()
            .expect("parse_pem_certs accepted what pem_cert_ders refused");
        assert_eq!(
            infos.len(),
            ders.len(),
            "one CertInfo per CERTIFICATE block"
        );
    }
    for der in ders.iter().flatten() {
        // Canonical PEM (what is published): re-encoding a block gives back the same DER.
        let pem = cert_pem(der);
        let again = pem_cert_ders(pem.as_bytes()).expect("our own PEM must parse");
        assert_eq!(again, std::slice::from_ref(der), "cert_pem must round-trip");
        if let Ok(info) = CertInfo::from_der(der) {
            assert_eq!(&info.der, der);
            let _ = info.service_uid();
        }
    }
}

/// Target `private_key`: a PEM private key as found in `tls.key`.
pub fn private_key(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(key) = PrivateKey::from_pem(text) else {
        return;
    };
    assert_eq!(key.pem(), text, "an adopted key keeps its original PEM");
    crate::ca::compute_skid(&key).expect("a parsed key has a key identifier");
    // A key that parses must sign, and what it signs must pass the reuse check: a serving Secret
    // whose key parses but cannot sign would be re-issued forever.
    let ca = test_ca();
    let request = request(&[]);
    let issued = issue_serving(ca, &request, key, now()).expect("a parsed key must sign a leaf");
    let names = serving_dns_names(request.service, request.namespace, false, "cluster.local");
    assert_eq!(
        verify_serving_secret(
            Some(issued.cert_chain_pem.as_bytes()),
            Some(issued.key_pem.as_bytes()),
            ca,
            &names,
            Some(SERVICE_UID),
            Duration::ZERO,
            now(),
        ),
        None,
        "a fresh leaf signed with an adopted key must be reusable"
    );
}

/// A CA of this process, for targets that need one but no particular one.
fn test_ca() -> &'static SigningCa {
    static CA: OnceLock<SigningCa> = OnceLock::new();
    CA.get_or_init(|| {
        SigningCa::create(&fast_ca_config(), now() - Duration::from_secs(86_400))
            .expect("creating a P-256 CA")
    })
}

/// The serving request every target issues: Service `api` in `shop`.
pub fn request(extra_dns_names: &[String]) -> ServingRequest<'_> {
    ServingRequest {
        service: "api",
        namespace: "shop",
        uid: SERVICE_UID,
        headless: false,
        cluster_domain: "cluster.local",
        lifetime: crate::DEFAULT_SERVING_LIFETIME,
        chain_order: ChainOrder::Portable,
        extra_dns_names,
    }
}

/// What must hold for a CA loaded from Secret data (called by the controller's `ca_secret`
/// target on every CA its decision accepts): it loads again from what it publishes, it can be
/// rotated or refuses to with an error, and a certificate it issues passes the reuse check (else
/// every serving certificate would be re-issued on every pass).
pub fn check_loaded_ca(ca: &SigningCa, now: OffsetDateTime) {
    let crt = ca.tls_crt_pem();
    let key = ca.tls_key_pem();
    let bundle = ca.ca_bundle_pem();
    let intermediate = ca.intermediate_pem();
    let again = SigningCa::from_secret_data(
        crt.as_bytes(),
        key.as_bytes(),
        bundle.as_deref().map(str::as_bytes),
        intermediate.as_deref().map(str::as_bytes),
        now,
    )
    .expect("a loaded CA must load again from what it publishes");
    assert_eq!(again.tls_crt_pem(), crt);
    assert_eq!(again.bundle_pem(), ca.bundle_pem());
    assert_eq!(again.intermediate_pem(), intermediate);
    let published = parse_pem_certs(ca.bundle_pem().as_bytes()).expect("the bundle must parse");
    assert!(!published.is_empty(), "the bundle holds a certificate");
    check_issues_reusable(ca, now);
    // The rotation dry run the CA manager makes when it loads a CA.
    if let Ok(rotation) = ca.rotate(&fast_ca_config(), now) {
        assert!(rotation.previous_trusted_until > now);
        check_issues_reusable(&rotation.ca, now);
    }
}

/// A leaf `ca` issues (if it issues at all) passes [`verify_serving_secret`].
fn check_issues_reusable(ca: &SigningCa, now: OffsetDateTime) {
    if ca.is_expired(now) {
        return;
    }
    let key = generate_key(KeyAlgorithm::EcdsaP256).expect("generating a P-256 key");
    let request = request(&[]);
    let Ok(issued) = issue_serving(ca, &request, key, now) else {
        return;
    };
    let names = serving_dns_names(request.service, request.namespace, false, "cluster.local");
    assert_eq!(
        verify_serving_secret(
            Some(issued.cert_chain_pem.as_bytes()),
            Some(issued.key_pem.as_bytes()),
            ca,
            &names,
            Some(SERVICE_UID),
            Duration::ZERO,
            now,
        ),
        None,
        "a leaf the CA just issued must be reusable"
    );
}

/// Replays `fuzz/corpus/<target>/` (and `fuzz/artifacts/<target>/`, where `cargo fuzz` leaves
/// the inputs that crashed, when present) through `body`. Returns how many inputs ran, or the
/// inputs that panicked; a missing or empty corpus is an error, so the replay cannot pass by
/// running nothing.
pub fn run_corpus(target: &str, body: impl Fn(&[u8])) -> Result<usize, String> {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let corpus = fuzz.join("corpus").join(target);
    let mut inputs = files(&corpus)?;
    if inputs.is_empty() {
        return Err(format!("{}: empty corpus", corpus.display()));
    }
    let artifacts = fuzz.join("artifacts").join(target);
    if artifacts.is_dir() {
        inputs.extend(files(&artifacts)?);
    }
    let mut failed = Vec::new();
    for path in &inputs {
        let data = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(&data))).is_err() {
            failed.push(path.display().to_string());
        }
    }
    if failed.is_empty() {
        Ok(inputs.len())
    } else {
        Err(format!("inputs that panic: {}", failed.join(", ")))
    }
}

fn files(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| format!("{}: {e}", dir.display()))?.path();
        if path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}
