//! An expired CA is adopted and rotated (cluster switched off longer than the CA's life).

mod common;
use common::*;
use service_ca_pki::*;
use std::time::Duration;

const HOST: &str = "foo.bar.svc";

/// A CA with a 2-minute life (the shortest `validate()` allows is 1 minute).
fn short_cfg() -> CaConfig {
    CaConfig {
        lifetime: Duration::from_secs(120),
        rotation_threshold: Duration::from_secs(60),
        trust_bridge_min: Duration::from_secs(60),
        ..CaConfig::default()
    }
}

#[test]
fn expired_ca_is_adopted_and_rotated() {
    let t0 = now();
    let cfg = short_cfg();
    let old = SigningCa::create(&cfg, t0).unwrap();
    let old_bundle = old.bundle_pem();
    let old_leaf = issue(&old, "foo", "bar", ChainOrder::Portable, t0);
    // The cluster was off for a day: the CA expired long ago.
    let later = old.not_after() + time::Duration::days(1);
    let adopted = SigningCa::from_secret_data(
        old.tls_crt_pem().as_bytes(),
        old.tls_key_pem().as_bytes(),
        None,
        None,
        later,
    )
    .expect("an expired CA is adopted");
    assert!(adopted.is_expired(later));
    assert!(adopted.is_expired(old.not_after()), "expired at notAfter");
    assert!(!adopted.is_expired(old.not_after() - time::Duration::seconds(1)));
    assert!(adopted.needs_rotation(&cfg, later));
    assert!(adopted.needs_rotation(&CaConfig::default(), later));
    // Signing with the expired CA is still refused.
    let e = issue_serving(
        &adopted,
        &req("foo", "bar", false, ChainOrder::Portable),
        generate_key(KeyAlgorithm::EcdsaP256).unwrap(),
        later,
    )
    .unwrap_err();
    assert_eq!(e.category(), "ca_expired");
    assert!(matches!(e, PkiError::CaExpired { .. }));

    // Rotation works like a due rotation, with cross-signing by the old key.
    let rot = adopted.rotate(&CaConfig::default(), later).unwrap();
    let new = &rot.ca;
    assert!(!new.is_expired(later));
    assert!(!new.needs_rotation(&CaConfig::default(), later));
    assert_eq!(new.subject_cn(), old.subject_cn());
    assert_eq!(
        rot.previous_trusted_until,
        later + time::Duration::days(183),
        "A.notAfter = max(OLD.notAfter, now + trust_bridge_min)"
    );
    let bundle = parse_pem_certs(new.bundle_pem().as_bytes()).unwrap();
    assert_eq!(bundle.len(), 2);
    assert_eq!(bundle[0].der, new.cert_info().der);
    // A = OLD under NEW: OLD's key id, NEW's key id as AKID, valid now.
    assert_eq!(bundle[1].skid, Some(old.skid()));
    assert_eq!(bundle[1].akid, Some(new.skid()));
    assert!(bundle[1].not_after > later);
    // B = NEW under OLD: signed with the expired CA's key.
    let b = &parse_pem_certs(new.intermediate_pem().unwrap().as_bytes()).unwrap()[0];
    assert_eq!(b.skid, Some(new.skid()));
    assert_eq!(b.akid, Some(old.skid()));

    let leaf = issue(new, "foo", "bar", ChainOrder::Portable, later);
    webpki_verify(&new.bundle_pem(), &leaf.cert_chain_pem, HOST, later).unwrap();
    // rustls/webpki ignore the validity of trust anchors: a client still holding the expired
    // [OLD] bundle accepts the new chain [leaf, B, NEW] through B.
    webpki_verify(&old_bundle, &leaf.cert_chain_pem, HOST, later).unwrap();
    // Leaves of the old CA are expired (capped at the CA's notAfter) and stay rejected.
    assert!(webpki_verify(&new.bundle_pem(), &old_leaf.cert_chain_pem, HOST, later).is_err());

    // The rotated Secret round-trips.
    let back = SigningCa::from_secret_data(
        new.tls_crt_pem().as_bytes(),
        new.tls_key_pem().as_bytes(),
        new.ca_bundle_pem().as_deref().map(str::as_bytes),
        new.intermediate_pem().as_deref().map(str::as_bytes),
        later,
    )
    .unwrap();
    assert_eq!(back.bundle_pem(), new.bundle_pem());
    assert!(!back.needs_rotation(&CaConfig::default(), later));

    require_openssl();
    openssl_verify(
        &new.bundle_pem(),
        &leaf.cert_chain_pem,
        Some(HOST),
        Some(later),
    )
    .unwrap();
    // OpenSSL checks the anchor's validity: the expired [OLD] bundle does not work.
    let e = openssl_verify(&old_bundle, &leaf.cert_chain_pem, Some(HOST), Some(later)).unwrap_err();
    assert!(e.contains("expired"), "{e}");
}

#[test]
fn expired_ecdsa_ca_rotates() {
    let t0 = now();
    let cfg = CaConfig {
        key_algorithm: KeyAlgorithm::EcdsaP384,
        ..short_cfg()
    };
    let old = SigningCa::create(&cfg, t0).unwrap();
    let later = old.not_after() + time::Duration::hours(1);
    let adopted = SigningCa::from_secret_data(
        old.tls_crt_pem().as_bytes(),
        old.tls_key_pem().as_bytes(),
        None,
        None,
        later,
    )
    .unwrap();
    let rot = adopted.rotate(&cfg, later).unwrap();
    let leaf = issue(&rot.ca, "foo", "bar", ChainOrder::Upstream, later);
    webpki_verify(&rot.ca.bundle_pem(), &leaf.cert_chain_pem, HOST, later).unwrap();
}

#[test]
fn expired_ca_other_validation_unchanged() {
    let t0 = now();
    let cfg = short_cfg();
    let ca = SigningCa::create(&cfg, t0).unwrap();
    let other = SigningCa::create(&cfg, t0).unwrap();
    let later = ca.not_after() + time::Duration::days(1);
    let crt = ca.tls_crt_pem();
    let e = SigningCa::from_secret_data(
        crt.as_bytes(),
        other.tls_key_pem().as_bytes(),
        None,
        None,
        later,
    )
    .unwrap_err();
    assert_eq!(e.category(), "key_mismatch");
    let leaf = issue(&ca, "foo", "bar", ChainOrder::Portable, t0);
    let e = SigningCa::from_secret_data(
        leaf.cert_chain_pem.as_bytes(),
        leaf.key_pem.as_bytes(),
        None,
        None,
        later,
    )
    .unwrap_err();
    assert_eq!(e.category(), "not_ca");
    let two = format!("{crt}{crt}");
    let e = SigningCa::from_secret_data(
        crt.as_bytes(),
        ca.tls_key_pem().as_bytes(),
        None,
        Some(two.as_bytes()),
        later,
    )
    .unwrap_err();
    assert_eq!(e.category(), "intermediate_count");
}
