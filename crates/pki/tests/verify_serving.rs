//! `verify_serving_secret`: signature, key, UID and issuer checks on top of `needs_reissue`.

mod common;
use common::*;
use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DistinguishedName, DnType, DnValue,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, SanType,
};
use service_ca_pki::*;
use std::time::Duration;

const UID: &str = "0b7c2f5e-1d3a-4c8e-9f6a-2b1c3d4e5f60";
const HOUR: Duration = Duration::from_secs(3600);

fn names() -> Vec<String> {
    serving_dns_names("foo", "bar", false, "cluster.local")
}

fn check(crt: &str, key: &str, ca: &SigningCa, uid: Option<&str>) -> Option<ReissueReason> {
    verify_serving_secret(
        Some(crt.as_bytes()),
        Some(key.as_bytes()),
        ca,
        &names(),
        uid,
        HOUR,
        now(),
    )
}

/// CA subject with a CN encoded as UTF8String (like our CAs' `...@<ts>` names).
fn utf8_dn(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, DnValue::Utf8String(cn.to_string()));
    dn
}

/// A leaf for foo.bar signed by `issuer_der`/`issuer_key`, optionally with the UID extension.
fn rcgen_leaf(issuer_der: &[u8], issuer_key: &KeyPair, uid: Option<&str>) -> (String, String) {
    let leaf_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p = CertificateParams::default();
    p.distinguished_name = utf8_dn("foo.bar.svc");
    p.subject_alt_names = names()
        .into_iter()
        .map(|n| SanType::DnsName(n.try_into().unwrap()))
        .collect();
    p.not_before = now() - time::Duration::seconds(1);
    p.not_after = now() + time::Duration::hours(2);
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    p.use_authority_key_identifier_extension = true;
    if let Some(uid) = uid {
        let mut v = vec![0x13, uid.len() as u8];
        v.extend_from_slice(uid.as_bytes());
        p.custom_extensions = vec![CustomExtension::from_oid_content(&SERVICE_UID_OID, v)];
    }
    let issuer = Issuer::from_ca_cert_der(&issuer_der.to_vec().into(), issuer_key).unwrap();
    let cert = p.signed_by(&leaf_key, &issuer).unwrap();
    (cert.pem(), leaf_key.serialize_pem())
}

/// An attacker's self-signed CA with the given subject CN and key id, and its key.
fn fake_ca(cn: &str, skid: Vec<u8>) -> (Vec<u8>, KeyPair) {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p = CertificateParams::default();
    p.distinguished_name = utf8_dn(cn);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.key_identifier_method = KeyIdMethod::PreSpecified(skid);
    let der = p.self_signed(&key).unwrap().der().to_vec();
    (der, key)
}

fn issue_with_uid(ca: &SigningCa, uid: &str, lifetime: Duration) -> IssuedCert {
    let mut r = req("foo", "bar", false, ChainOrder::Portable);
    r.uid = uid;
    r.lifetime = lifetime;
    issue_serving(
        ca,
        &r,
        generate_key(KeyAlgorithm::EcdsaP256).unwrap(),
        now(),
    )
    .unwrap()
}

#[test]
fn genuine_secret_is_kept() {
    for alg in [KeyAlgorithm::Rsa2048, KeyAlgorithm::EcdsaP384] {
        let ca = SigningCa::create(
            &CaConfig {
                key_algorithm: alg,
                ..CaConfig::default()
            },
            now(),
        )
        .unwrap();
        let leaf = issue(&ca, "foo", "bar", ChainOrder::Portable, now());
        assert_eq!(
            check(&leaf.cert_chain_pem, &leaf.key_pem, &ca, Some(UID)),
            None
        );
        assert_eq!(check(&leaf.cert_chain_pem, &leaf.key_pem, &ca, None), None);
        assert_eq!(
            needs_reissue(
                Some(leaf.cert_chain_pem.as_bytes()),
                &ca,
                &names(),
                HOUR,
                now()
            ),
            None
        );
        assert_eq!(
            parse_pem_certs(leaf.cert_chain_pem.as_bytes()).unwrap()[0].service_uid(),
            Some(UID.to_string())
        );
    }
}

#[test]
fn needs_reissue_reasons_carry_over() {
    let t = now();
    let ca = SigningCa::create(&CaConfig::short_rotation(), t).unwrap();
    let leaf = issue_with_uid(&ca, UID, 2 * HOUR);
    let key = Some(leaf.key_pem.as_bytes());
    let v = |crt: Option<&[u8]>, names: &[String], at| {
        verify_serving_secret(crt, key, &ca, names, Some(UID), HOUR, at)
    };
    let crt = Some(leaf.cert_chain_pem.as_bytes());
    assert_eq!(v(None, &names(), t), Some(ReissueReason::Missing));
    assert_eq!(v(Some(b" \n"), &names(), t), Some(ReissueReason::Missing));
    assert_eq!(
        v(Some(b"garbage"), &names(), t),
        Some(ReissueReason::Unparsable)
    );
    let headless = serving_dns_names("foo", "bar", true, "cluster.local");
    assert_eq!(v(crt, &headless, t), Some(ReissueReason::WrongNames));
    assert_eq!(
        v(crt, &names(), t + time::Duration::minutes(61)),
        Some(ReissueReason::NearExpiry)
    );
    assert_eq!(
        v(crt, &names(), t + time::Duration::hours(3)),
        Some(ReissueReason::Expired)
    );
    assert_eq!(v(crt, &names(), t), None);
    // Another CA's leaf.
    let other = SigningCa::create(&CaConfig::short_rotation(), t).unwrap();
    let foreign = issue(&other, "foo", "bar", ChainOrder::Portable, t);
    assert_eq!(
        check(&foreign.cert_chain_pem, &foreign.key_pem, &ca, Some(UID)),
        Some(ReissueReason::WrongIssuer)
    );
}

#[test]
fn forged_signature_is_detected() {
    let ca = SigningCa::create(&CaConfig::default(), now()).unwrap();
    // A leaf with the CA's issuer name and AKID, signed by another key.
    let (fake_der, fake_key) = fake_ca(&ca.subject_cn(), ca.skid());
    assert_eq!(
        CertInfo::from_der(&fake_der).unwrap().subject_raw,
        ca.cert_info().subject_raw,
        "the forgery copies the CA subject bytes"
    );
    let (forged, forged_key) = rcgen_leaf(&fake_der, &fake_key, Some(UID));
    let info = &parse_pem_certs(forged.as_bytes()).unwrap()[0];
    assert_eq!(info.akid, Some(ca.skid()));
    assert_eq!(info.issuer_raw, ca.cert_info().subject_raw);
    // The old check is fooled, the new one is not.
    assert_eq!(
        needs_reissue(Some(forged.as_bytes()), &ca, &names(), HOUR, now()),
        None
    );
    assert_eq!(
        check(&forged, &forged_key, &ca, Some(UID)),
        Some(ReissueReason::BadSignature)
    );
    // A genuine leaf with a corrupted signature (last byte flipped).
    let leaf = issue(&ca, "foo", "bar", ChainOrder::Portable, now());
    let mut der = ders(&leaf.cert_chain_pem)[0].clone();
    *der.last_mut().unwrap() ^= 1;
    assert_eq!(
        check(&cert_pem(&der), &leaf.key_pem, &ca, None),
        Some(ReissueReason::BadSignature)
    );
    // Same key id, different issuer name: the chain cannot be built by name.
    let (renamed_der, renamed_key) = fake_ca("someone-else", ca.skid());
    let (renamed, renamed_leaf_key) = rcgen_leaf(&renamed_der, &renamed_key, Some(UID));
    assert_eq!(
        check(&renamed, &renamed_leaf_key, &ca, Some(UID)),
        Some(ReissueReason::WrongIssuer)
    );
}

#[test]
fn key_checks() {
    let ca = SigningCa::create(&CaConfig::default(), now()).unwrap();
    let leaf = issue(&ca, "foo", "bar", ChainOrder::Portable, now());
    let crt = Some(leaf.cert_chain_pem.as_bytes());
    let v =
        |key: Option<&[u8]>| verify_serving_secret(crt, key, &ca, &names(), Some(UID), HOUR, now());
    assert_eq!(v(Some(leaf.key_pem.as_bytes())), None);
    assert_eq!(v(None), Some(ReissueReason::KeyMissing));
    assert_eq!(v(Some(b"")), Some(ReissueReason::KeyMissing));
    assert_eq!(v(Some(b"not a key")), Some(ReissueReason::KeyUnparsable));
    assert_eq!(
        v(Some(
            b"-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n"
        )),
        Some(ReissueReason::KeyUnparsable)
    );
    assert_eq!(v(Some(&[0xff, 0xfe])), Some(ReissueReason::KeyUnparsable));
    let stranger = generate_key(KeyAlgorithm::Rsa2048).unwrap();
    assert_eq!(
        v(Some(stranger.pem().as_bytes())),
        Some(ReissueReason::KeyMismatch)
    );
    let ec = generate_key(KeyAlgorithm::EcdsaP256).unwrap();
    assert_eq!(
        v(Some(ec.pem().as_bytes())),
        Some(ReissueReason::KeyMismatch)
    );
    // The CA's own key is not the leaf's key either.
    assert_eq!(
        v(Some(ca.tls_key_pem().as_bytes())),
        Some(ReissueReason::KeyMismatch)
    );
    // The same key as PKCS#8 is accepted.
    let pkcs8 = KeyPair::from_pem(&leaf.key_pem).unwrap().serialize_pem();
    assert!(pkcs8.starts_with("-----BEGIN PRIVATE KEY-----"));
    assert_eq!(v(Some(pkcs8.as_bytes())), None);
}

#[test]
fn uid_checks() {
    let ca = SigningCa::create(&CaConfig::default(), now()).unwrap();
    let leaf = issue_with_uid(&ca, UID, DEFAULT_SERVING_LIFETIME);
    assert_eq!(
        check(
            &leaf.cert_chain_pem,
            &leaf.key_pem,
            &ca,
            Some("another-uid")
        ),
        Some(ReissueReason::UidMismatch)
    );
    assert_eq!(
        check(&leaf.cert_chain_pem, &leaf.key_pem, &ca, Some("")),
        Some(ReissueReason::UidMismatch)
    );
    // A UTF8String UID (not PrintableString-safe) round-trips.
    let odd = "uid_with_underscore*";
    let leaf = issue_with_uid(&ca, odd, DEFAULT_SERVING_LIFETIME);
    assert_eq!(
        parse_pem_certs(leaf.cert_chain_pem.as_bytes()).unwrap()[0].service_uid(),
        Some(odd.to_string())
    );
    assert_eq!(
        check(&leaf.cert_chain_pem, &leaf.key_pem, &ca, Some(odd)),
        None
    );
    // Genuinely signed by the CA key but without the UID extension.
    let ca_key = KeyPair::from_pem(&ca.tls_key_pem()).unwrap();
    let (no_uid, no_uid_key) = rcgen_leaf(&ca.cert_info().der, &ca_key, None);
    assert_eq!(
        parse_pem_certs(no_uid.as_bytes()).unwrap()[0].service_uid(),
        None
    );
    assert_eq!(check(&no_uid, &no_uid_key, &ca, None), None);
    assert_eq!(
        check(&no_uid, &no_uid_key, &ca, Some(UID)),
        Some(ReissueReason::UidMismatch)
    );
}

#[test]
fn after_rotation() {
    let cfg = CaConfig::default();
    let t = now();
    let old = SigningCa::create(&cfg, t).unwrap();
    let old_leaf = issue(&old, "foo", "bar", ChainOrder::Portable, t);
    let rot = old.rotate(&cfg, t).unwrap();
    let new_leaf = issue(&rot.ca, "foo", "bar", ChainOrder::Portable, t);
    assert_eq!(
        check(
            &new_leaf.cert_chain_pem,
            &new_leaf.key_pem,
            &rot.ca,
            Some(UID)
        ),
        None
    );
    assert_eq!(
        check(
            &old_leaf.cert_chain_pem,
            &old_leaf.key_pem,
            &rot.ca,
            Some(UID)
        ),
        Some(ReissueReason::WrongIssuer)
    );
    // The adopted rotated Secret gives the same answers.
    let adopted = SigningCa::from_secret_data(
        rot.ca.tls_crt_pem().as_bytes(),
        rot.ca.tls_key_pem().as_bytes(),
        rot.ca.ca_bundle_pem().as_deref().map(str::as_bytes),
        rot.ca.intermediate_pem().as_deref().map(str::as_bytes),
        t,
    )
    .unwrap();
    assert_eq!(
        check(
            &new_leaf.cert_chain_pem,
            &new_leaf.key_pem,
            &adopted,
            Some(UID)
        ),
        None
    );
}

#[test]
fn reason_labels() {
    let all = [
        (ReissueReason::Missing, "missing"),
        (ReissueReason::Unparsable, "unparsable"),
        (ReissueReason::WrongIssuer, "wrong_issuer"),
        (ReissueReason::WrongNames, "wrong_names"),
        (ReissueReason::NearExpiry, "near_expiry"),
        (ReissueReason::Expired, "expired"),
        (ReissueReason::BadSignature, "bad_signature"),
        (ReissueReason::KeyMissing, "key_missing"),
        (ReissueReason::KeyUnparsable, "key_unparsable"),
        (ReissueReason::KeyMismatch, "key_mismatch"),
        (ReissueReason::UidMismatch, "uid_mismatch"),
    ];
    for (r, s) in all {
        assert_eq!(r.as_str(), s);
        assert_eq!(r.to_string(), s);
    }
}
