//! Adoption of CAs made by the openssl CLI, KeyPool behaviour, and SAN property tests.

mod common;
use common::*;
use proptest::prelude::*;
use service_ca_pki::*;
use std::process::Command;
use std::sync::atomic::Ordering;

fn openssl_ca(dir: &std::path::Path, days: &str, ca: bool, pkcs1: bool) -> (String, String) {
    let key = dir.join("k.pem");
    let crt = dir.join("c.pem");
    let ext = if ca {
        "basicConstraints=critical,CA:TRUE"
    } else {
        "basicConstraints=critical,CA:FALSE"
    };
    let st = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=adopted-ca@1700000000",
            "-days",
            days,
        ])
        .args([
            "-addext",
            ext,
            "-addext",
            "keyUsage=critical,digitalSignature,keyEncipherment,keyCertSign",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&crt)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    if pkcs1 {
        let st = Command::new("openssl")
            .args(["rsa", "-traditional", "-in"])
            .arg(&key)
            .arg("-out")
            .arg(&key)
            .output()
            .unwrap();
        assert!(st.status.success());
    }
    (
        std::fs::read_to_string(&crt).unwrap(),
        std::fs::read_to_string(&key).unwrap(),
    )
}

#[test]
fn adopt_openssl_cas() {
    require_openssl();
    let t = now();
    for pkcs1 in [false, true] {
        let dir = tmpdir("adopt");
        let (crt, key) = openssl_ca(&dir, "30", true, pkcs1);
        assert_eq!(key.contains("BEGIN RSA PRIVATE KEY"), pkcs1);
        let ca =
            SigningCa::from_secret_data(crt.as_bytes(), key.as_bytes(), None, None, t).unwrap();
        assert_eq!(*ca.tls_key_pem(), key, "original key PEM kept");
        assert_eq!(ca.tls_crt_pem(), crt);
        let leaf = issue(&ca, "foo", "bar", ChainOrder::Portable, t);
        let l = &parse_pem_certs(leaf.cert_chain_pem.as_bytes()).unwrap()[0];
        assert_eq!(l.issuer_raw, ca.cert_info().subject_raw);
        assert_eq!(l.akid, Some(ca.skid()));
        assert!(!ca.skid().is_empty());
        openssl_verify(
            &ca.bundle_pem(),
            &leaf.cert_chain_pem,
            Some("foo.bar.svc"),
            None,
        )
        .unwrap();
        webpki_verify(&ca.bundle_pem(), &leaf.cert_chain_pem, "foo.bar.svc", t).unwrap();
        // An adopted CA rotates too.
        let rot = ca.rotate(&CaConfig::default(), t).unwrap();
        let nl = issue(&rot.ca, "foo", "bar", ChainOrder::Portable, t);
        openssl_verify(
            &ca.bundle_pem(),
            &nl.cert_chain_pem,
            Some("foo.bar.svc"),
            None,
        )
        .unwrap();
        openssl_verify(
            &rot.ca.bundle_pem(),
            &leaf.cert_chain_pem,
            Some("foo.bar.svc"),
            None,
        )
        .unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn adopt_rejections() {
    let t = now();
    let ours = SigningCa::create(&CaConfig::default(), t).unwrap();
    let other = SigningCa::create(&CaConfig::default(), t).unwrap();
    // Round trip of our own Secret data, including bundle and intermediate after rotation.
    let rot = ours.rotate(&CaConfig::default(), t).unwrap();
    let back = SigningCa::from_secret_data(
        rot.ca.tls_crt_pem().as_bytes(),
        rot.ca.tls_key_pem().as_bytes(),
        rot.ca.ca_bundle_pem().as_deref().map(str::as_bytes),
        rot.ca.intermediate_pem().as_deref().map(str::as_bytes),
        t,
    )
    .unwrap();
    assert_eq!(back.bundle_pem(), rot.ca.bundle_pem());
    let crt = ours.tls_crt_pem();
    let e = SigningCa::from_secret_data(
        crt.as_bytes(),
        other.tls_key_pem().as_bytes(),
        None,
        None,
        t,
    )
    .unwrap_err();
    assert_eq!(e.category(), "key_mismatch");
    // An expired CA is adopted (and then rotated, see tests/expired_ca.rs), not refused.
    let late = ours.not_after() + ::time::Duration::seconds(1);
    let expired = SigningCa::from_secret_data(
        crt.as_bytes(),
        ours.tls_key_pem().as_bytes(),
        None,
        None,
        late,
    )
    .unwrap();
    assert!(expired.is_expired(late));
    assert!(!expired.is_expired(t));
    let leaf = issue(&ours, "foo", "bar", ChainOrder::Portable, t);
    let e = SigningCa::from_secret_data(
        leaf.cert_chain_pem.as_bytes(),
        leaf.key_pem.as_bytes(),
        None,
        None,
        t,
    )
    .unwrap_err();
    assert_eq!(e.category(), "not_ca");
    let two = format!("{crt}{crt}");
    let e = SigningCa::from_secret_data(
        crt.as_bytes(),
        ours.tls_key_pem().as_bytes(),
        None,
        Some(two.as_bytes()),
        t,
    )
    .unwrap_err();
    assert!(matches!(e, PkiError::IntermediateCount { found: 2 }));
    let e = SigningCa::from_secret_data(crt.as_bytes(), b"not a key", None, None, t).unwrap_err();
    assert_eq!(e.category(), "invalid_key");
    let e =
        SigningCa::from_secret_data(b"", ours.tls_key_pem().as_bytes(), None, None, t).unwrap_err();
    assert_eq!(e.category(), "no_certificate");
    require_openssl();
    let dir = tmpdir("notca");
    let (crt, key) = openssl_ca(&dir, "30", false, false);
    let e = SigningCa::from_secret_data(crt.as_bytes(), key.as_bytes(), None, None, t).unwrap_err();
    assert_eq!(e.category(), "not_ca");
    assert!(e.to_string().contains("not a CA"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn key_pool_bounded_valid_and_stops() {
    // RSA: generation (~90 ms) is far slower than draining, so a drain sees what was ready.
    let pool = KeyPool::new(KeyAlgorithm::Rsa2048, 3, 2);
    let live = pool.live_threads_counter();
    let k = pool.take().unwrap();
    assert!(k.pem().starts_with("-----BEGIN RSA PRIVATE KEY-----"));
    // Bounded: at most capacity keys are ready, plus one per thread held while blocked. Observed
    // for a window (every 100 ms, drain what is ready), and the pool must have filled at least
    // once: a bound that was never reached proves nothing.
    let mut most = 0;
    for _ in 0..20 {
        std::thread::sleep(std::time::Duration::from_millis(400));
        let mut n = 0;
        while pool.try_take().is_some() {
            n += 1;
            assert!(
                n <= 3 + 2,
                "{n} keys ready: more than capacity 3 + 2 threads"
            );
        }
        most = most.max(n);
    }
    assert!(
        most >= 3,
        "the pool never filled (at most {most} ready keys)"
    );
    let ca = SigningCa::create(&CaConfig::short_rotation(), now()).unwrap();
    let leaf = issue_serving(
        &ca,
        &req("a", "b", false, ChainOrder::Portable),
        pool.take().unwrap(),
        now(),
    )
    .unwrap();
    assert!(leaf.cert_chain_pem.contains("BEGIN CERTIFICATE"));
    assert_eq!(live.load(Ordering::SeqCst), 2);
    drop(pool);
    assert_eq!(
        live.load(Ordering::SeqCst),
        0,
        "threads stop when the pool is dropped"
    );
    let rsa = KeyPool::new(KeyAlgorithm::Rsa2048, 1, 1);
    assert!(
        rsa.take()
            .unwrap()
            .pem()
            .starts_with("-----BEGIN RSA PRIVATE KEY-----")
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn san_set_matches(svc in "[a-z]([-a-z0-9]{0,61}[a-z0-9])?", ns in "[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", headless: bool) {
        let names = serving_dns_names(&svc, &ns, headless, "cluster.local");
        let mut want = vec![format!("{svc}.{ns}.svc"), format!("{svc}.{ns}.svc.cluster.local")];
        if headless {
            want.push(format!("*.{svc}.{ns}.svc"));
            want.push(format!("*.{svc}.{ns}.svc.cluster.local"));
        }
        want.sort();
        prop_assert_eq!(&names, &want);
        let ca = ca_for_props();
        let key = generate_key(KeyAlgorithm::EcdsaP256).unwrap();
        let r = ServingRequest { service: &svc, namespace: &ns, ..req("x", "y", headless, ChainOrder::Portable) };
        let leaf = issue_serving(ca, &r, key, now()).unwrap();
        let info = &parse_pem_certs(leaf.cert_chain_pem.as_bytes()).unwrap()[0];
        prop_assert_eq!(&info.dns_names, &want);
        prop_assert_eq!(&info.subject_cn, &want[0]);
        let expected_cn = if headless { format!("*.{svc}.{ns}.svc") } else { format!("{svc}.{ns}.svc") };
        prop_assert_eq!(&info.subject_cn, &expected_cn);
    }
}

fn ca_for_props() -> &'static SigningCa {
    static CA: std::sync::OnceLock<SigningCa> = std::sync::OnceLock::new();
    CA.get_or_init(|| {
        SigningCa::create(
            &CaConfig {
                key_algorithm: KeyAlgorithm::EcdsaP256,
                ..CaConfig::default()
            },
            now(),
        )
        .unwrap()
    })
}
