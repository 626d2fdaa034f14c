//! Trust across rotation: rustls handshakes, webpki at chosen times, openssl verify and s_client/s_server.

mod common;
use common::*;
use service_ca_pki::*;
use time::OffsetDateTime;

const HOST: &str = "foo.bar.svc";

struct World {
    pre_bundle: String,
    post_bundle: String,
    old_leaf: IssuedCert,
    new_leaf: IssuedCert,
    new_leaf_upstream: IssuedCert,
    rotated: SigningCa,
    t: OffsetDateTime,
}

fn world() -> World {
    let t = now();
    let ca = SigningCa::create(&CaConfig::default(), t - 610 * DAY).unwrap();
    let pre_bundle = ca.bundle_pem();
    let old_leaf = issue(&ca, "foo", "bar", ChainOrder::Portable, t - 10 * DAY);
    let cfg = CaConfig::default();
    assert!(ca.needs_rotation(&cfg, t));
    let rot = ca.rotate(&cfg, t).unwrap();
    let post_bundle = rot.ca.bundle_pem();
    let new_leaf = issue(&rot.ca, "foo", "bar", ChainOrder::Portable, t);
    let new_leaf_upstream = issue(&rot.ca, "foo", "bar", ChainOrder::Upstream, t);
    World {
        pre_bundle,
        post_bundle,
        old_leaf,
        new_leaf,
        new_leaf_upstream,
        rotated: rot.ca,
        t,
    }
}

fn matrix(w: &World) -> Vec<(&'static str, &str, &IssuedCert)> {
    vec![
        ("old bundle / old leaf", &w.pre_bundle, &w.old_leaf),
        ("old bundle / new leaf", &w.pre_bundle, &w.new_leaf),
        ("new bundle / old leaf", &w.post_bundle, &w.old_leaf),
        ("new bundle / new leaf", &w.post_bundle, &w.new_leaf),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_matrix_rustls_handshake() {
    let w = world();
    for (label, bundle, leaf) in matrix(&w) {
        rustls_handshake(bundle, &leaf.cert_chain_pem, &leaf.key_pem, HOST)
            .await
            .unwrap_or_else(|e| panic!("{label}: handshake failed: {e}"));
        webpki_verify(bundle, &leaf.cert_chain_pem, HOST, w.t)
            .unwrap_or_else(|e| panic!("{label}: {e}"));
    }
    // Upstream order works for rustls/webpki too (it builds paths), in all four cases.
    for bundle in [&w.pre_bundle, &w.post_bundle] {
        rustls_handshake(
            bundle,
            &w.new_leaf_upstream.cert_chain_pem,
            &w.new_leaf_upstream.key_pem,
            HOST,
        )
        .await
        .unwrap();
    }
    // Wrong hostname fails.
    let e = rustls_handshake(
        &w.post_bundle,
        &w.new_leaf.cert_chain_pem,
        &w.new_leaf.key_pem,
        "other.bar.svc",
    )
    .await;
    assert!(e.is_err());
    // Unrelated CA fails.
    let other = SigningCa::create(&CaConfig::default(), w.t).unwrap();
    let e = rustls_handshake(
        &other.bundle_pem(),
        &w.new_leaf.cert_chain_pem,
        &w.new_leaf.key_pem,
        HOST,
    )
    .await;
    assert!(e.is_err());
    let _ = &w.rotated;
}

#[test]
fn rotation_matrix_openssl() {
    require_openssl();
    let w = world();
    for (label, bundle, leaf) in matrix(&w) {
        openssl_verify(bundle, &leaf.cert_chain_pem, Some(HOST), None)
            .unwrap_or_else(|e| panic!("{label}: verify: {e}"));
        openssl_handshake(bundle, &leaf.cert_chain_pem, &leaf.key_pem, HOST)
            .unwrap_or_else(|e| panic!("{label}: s_client: {e}"));
    }
    // Documented expectation (docs/behavior.md §5.7, O-14): upstream order + stale bundle fails under OpenSSL.
    let up = &w.new_leaf_upstream;
    let e = openssl_handshake(&w.pre_bundle, &up.cert_chain_pem, &up.key_pem, HOST).unwrap_err();
    assert!(
        e.contains("self-signed") || e.contains("self signed"),
        "{e}"
    );
    assert!(openssl_verify(&w.pre_bundle, &up.cert_chain_pem, Some(HOST), None).is_err());
    // ... while upstream order with the new bundle is fine.
    openssl_handshake(&w.post_bundle, &up.cert_chain_pem, &up.key_pem, HOST).unwrap();
    // Negative: wrong hostname.
    assert!(
        openssl_handshake(
            &w.post_bundle,
            &w.new_leaf.cert_chain_pem,
            &w.new_leaf.key_pem,
            "x.bar.svc"
        )
        .is_err()
    );
    // Negative: unrelated CA.
    let other = SigningCa::create(&CaConfig::default(), w.t).unwrap();
    assert!(
        openssl_verify(
            &other.bundle_pem(),
            &w.new_leaf.cert_chain_pem,
            Some(HOST),
            None
        )
        .is_err()
    );
}

#[test]
fn expired_ca_and_leaf_after_ca_expiry_fail() {
    let t = now();
    let cfg = CaConfig::default();
    let ca = SigningCa::create(&cfg, t).unwrap();
    let leaf = issue(&ca, "foo", "bar", ChainOrder::Portable, t);
    // The leaf lifetime is capped at the CA notAfter.
    assert!(leaf.not_after <= ca.not_after());
    let after = ca.not_after() + time::Duration::seconds(1);
    assert!(webpki_verify(&ca.bundle_pem(), &leaf.cert_chain_pem, HOST, t).is_ok());
    assert!(webpki_verify(&ca.bundle_pem(), &leaf.cert_chain_pem, HOST, after).is_err());
    // A leaf requested after the CA expired is refused.
    let e = issue_serving(
        &ca,
        &req("foo", "bar", false, ChainOrder::Portable),
        generate_key(KeyAlgorithm::EcdsaP256).unwrap(),
        after,
    )
    .unwrap_err();
    assert_eq!(e.category(), "ca_expired");
    require_openssl();
    assert!(openssl_verify(&ca.bundle_pem(), &leaf.cert_chain_pem, Some(HOST), Some(t)).is_ok());
    assert!(
        openssl_verify(
            &ca.bundle_pem(),
            &leaf.cert_chain_pem,
            Some(HOST),
            Some(after)
        )
        .is_err()
    );
}

/// Two consecutive rotations with the documentation rule (790 d lifetime, rotate with < 183 d left).
#[test]
fn two_rotations() {
    let cfg = CaConfig::default();
    let t0 = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
    let ca1 = SigningCa::create(&cfg, t0).unwrap();
    let b1 = ca1.bundle_pem(); // [CA1]
    let t1 = t0 + time::Duration::days(607) + time::Duration::seconds(1);
    assert!(!ca1.needs_rotation(&cfg, t1 - time::Duration::seconds(2)));
    assert!(ca1.needs_rotation(&cfg, t1));
    let r1 = ca1.rotate(&cfg, t1).unwrap();
    let ca2 = r1.ca;
    // A1.notAfter = max(CA1.notAfter, t1 + 183 d) = t1 + 183 d (one second past CA1's expiry).
    assert_eq!(r1.previous_trusted_until, t1 + time::Duration::days(183));
    let b2 = ca2.bundle_pem(); // [CA2, A1]
    let leaf2 = issue(&ca2, "foo", "bar", ChainOrder::Portable, t1);
    let t2 = t1 + time::Duration::days(607) + time::Duration::seconds(1);
    assert!(ca2.needs_rotation(&cfg, t2));
    let r2 = ca2.rotate(&cfg, t2).unwrap();
    let ca3 = r2.ca;
    let b3 = ca3.bundle_pem(); // [CA3, A2]
    let leaf3 = issue(&ca3, "foo", "bar", ChainOrder::Portable, t2);
    assert_eq!(ca3.subject_cn(), ca1.subject_cn());
    let sec = time::Duration::seconds(1);

    // Client with the bundle from two rotations ago ([CA1]).
    // New leaves after rotation 2 ([leaf3, B2, CA3]) never chain to CA1: B2 is signed by CA2's key.
    assert!(webpki_verify(&b1, &leaf3.cert_chain_pem, HOST, t2 + sec).is_err());
    // Leaves from between the rotations ([leaf2, B1, CA2]): rustls/webpki does not check the anchor's
    // validity, so they keep working until they are replaced (immediately after rotation 2) ...
    assert!(webpki_verify(&b1, &leaf2.cert_chain_pem, HOST, t2 - sec).is_ok());
    // Client with the one-rotation-old bundle ([CA2, A1]) trusts leaf3 via B2 -> CA2.
    assert!(webpki_verify(&b2, &leaf3.cert_chain_pem, HOST, t2 + sec).is_ok());
    // Current bundle trusts leaf2 (via A2) and leaf3.
    assert!(webpki_verify(&b3, &leaf2.cert_chain_pem, HOST, t2 + sec).is_ok());
    assert!(webpki_verify(&b3, &leaf3.cert_chain_pem, HOST, t2 + sec).is_ok());

    require_openssl();
    // ... whereas OpenSSL also checks the trust anchor: [CA1] stops working at CA1.notAfter
    // (t0 + 790 d), i.e. 183 days after rotation 1 and well before rotation 2.
    let ca1_end = ca1.not_after();
    assert_eq!(ca1_end, t0 + time::Duration::days(790));
    assert!(openssl_verify(&b1, &leaf2.cert_chain_pem, Some(HOST), Some(ca1_end - sec)).is_ok());
    assert!(openssl_verify(&b1, &leaf2.cert_chain_pem, Some(HOST), Some(ca1_end + sec)).is_err());
    assert!(openssl_verify(&b1, &leaf3.cert_chain_pem, Some(HOST), Some(t2 + sec)).is_err());
    // One-rotation-old bundle works with new leaves until CA2 expires.
    assert!(openssl_verify(&b2, &leaf3.cert_chain_pem, Some(HOST), Some(t2 + sec)).is_ok());
    assert!(
        openssl_verify(
            &b2,
            &leaf3.cert_chain_pem,
            Some(HOST),
            Some(ca2.not_after() + sec)
        )
        .is_err()
    );
    assert!(openssl_verify(&b3, &leaf2.cert_chain_pem, Some(HOST), Some(t2 + sec)).is_ok());
    assert!(openssl_verify(&b3, &leaf3.cert_chain_pem, Some(HOST), Some(t2 + sec)).is_ok());
}
