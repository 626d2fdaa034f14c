//! Field-by-field checks of every certificate profile (docs/behavior.md §5), parsed with x509-parser.

mod common;
use common::*;
use service_ca_pki::*;
use x509_parser::prelude::*;

const UID_OID: &str = "1.3.6.1.4.1.2312.17.100.2.1";

fn parse(der: &[u8]) -> X509Certificate<'_> {
    X509Certificate::from_der(der).unwrap().1
}

/// Tag of the single CN attribute value in a raw Name.
fn cn_tag(name: &X509Name<'_>) -> u32 {
    let rdns: Vec<_> = name.iter().collect();
    assert_eq!(rdns.len(), 1, "single RDN");
    let attrs: Vec<_> = rdns[0].iter().collect();
    assert_eq!(attrs.len(), 1, "single attribute");
    assert_eq!(attrs[0].attr_type().to_id_string(), "2.5.4.3");
    attrs[0].attr_value().header.tag().0
}

fn ext<'a>(c: &'a X509Certificate<'_>, oid: &str) -> &'a X509Extension<'a> {
    c.extensions()
        .iter()
        .find(|e| e.oid.to_id_string() == oid)
        .unwrap_or_else(|| panic!("missing {oid}"))
}

fn serial_ok(c: &X509Certificate<'_>) {
    let s = &c.serial;
    assert!(s.bits() <= 63 && s.bits() > 0, "63-bit positive serial");
}

fn sha1_modulus(c: &X509Certificate<'_>) -> Vec<u8> {
    match c.public_key().parsed().unwrap() {
        x509_parser::public_key::PublicKey::RSA(rsa) => {
            let m = rsa.modulus;
            let skip = m.iter().take_while(|b| **b == 0).count();
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, &m[skip..])
                .as_ref()
                .to_vec()
        }
        _ => panic!("not RSA"),
    }
}

#[test]
fn ca_profile() {
    let t = now();
    let ca = SigningCa::create(&CaConfig::default(), t).unwrap();
    let der = &ders(&ca.tls_crt_pem())[0];
    let c = parse(der);
    assert_eq!(c.version(), X509Version::V3);
    assert_eq!(
        ca.subject_cn(),
        format!("openshift-service-serving-signer@{}", t.unix_timestamp())
    );
    assert_eq!(cn_tag(c.subject()), 12, "UTF8String because of '@'");
    assert_eq!(c.subject().as_raw(), c.issuer().as_raw());
    assert_eq!(c.validity().not_before.timestamp(), t.unix_timestamp() - 1);
    assert_eq!(
        c.validity().not_after.timestamp(),
        t.unix_timestamp() + 790 * 86400
    );
    assert_eq!(
        c.signature_algorithm.algorithm.to_id_string(),
        "1.2.840.113549.1.1.11"
    );
    serial_ok(&c);
    let ku = ext(&c, "2.5.29.15");
    assert!(ku.critical);
    let ParsedExtension::KeyUsage(k) = ku.parsed_extension() else {
        panic!()
    };
    assert!(k.digital_signature() && k.key_encipherment() && k.key_cert_sign() && !k.crl_sign());
    let bc = ext(&c, "2.5.29.19");
    assert!(bc.critical);
    let ParsedExtension::BasicConstraints(b) = bc.parsed_extension() else {
        panic!()
    };
    assert!(b.ca && b.path_len_constraint.is_none());
    let skid = ca.skid();
    assert_eq!(skid, sha1_modulus(&c));
    assert!(!ext(&c, "2.5.29.14").critical);
    let akid = ext(&c, "2.5.29.35");
    assert!(!akid.critical);
    let info = &parse_pem_certs(ca.tls_crt_pem().as_bytes()).unwrap()[0];
    assert_eq!(info.akid.as_deref(), Some(skid.as_slice()));
    assert!(
        c.extensions()
            .iter()
            .all(|e| e.oid.to_id_string() != "2.5.29.37" && e.oid.to_id_string() != "2.5.29.17")
    );
    assert!(
        ca.tls_key_pem()
            .starts_with("-----BEGIN RSA PRIVATE KEY-----\n")
    );
    assert!(ca.ca_bundle_pem().is_none() && ca.intermediate_pem().is_none());
    assert_eq!(ca.bundle_pem(), ca.tls_crt_pem());
}

#[test]
fn leaf_profile() {
    let t = now();
    let ca = SigningCa::create(&CaConfig::default(), t).unwrap();
    for headless in [false, true] {
        let key = generate_key(KeyAlgorithm::Rsa2048).unwrap();
        let leaf = issue_serving(
            &ca,
            &req("foo", "bar", headless, ChainOrder::Portable),
            key,
            t,
        )
        .unwrap();
        assert!(
            leaf.key_pem
                .starts_with("-----BEGIN RSA PRIVATE KEY-----\n")
        );
        let chain = ders(&leaf.cert_chain_pem);
        assert_eq!(chain.len(), 2, "leaf + CA before any rotation");
        assert_eq!(chain[1], ders(&ca.tls_crt_pem())[0]);
        let c = parse(&chain[0]);
        let cac = parse(&chain[1]);
        assert_eq!(
            c.issuer().as_raw(),
            cac.subject().as_raw(),
            "issuer copied byte-for-byte"
        );
        let info = CertInfo::from_der(&chain[0]).unwrap();
        let expected = serving_dns_names("foo", "bar", headless, "cluster.local");
        assert_eq!(info.dns_names, expected);
        if headless {
            assert_eq!(info.subject_cn, "*.foo.bar.svc");
            assert_eq!(cn_tag(c.subject()), 12, "UTF8String because of '*'");
            assert_eq!(expected.len(), 4);
        } else {
            assert_eq!(info.subject_cn, "foo.bar.svc");
            assert_eq!(cn_tag(c.subject()), 19, "PrintableString");
        }
        assert_eq!(c.validity().not_before.timestamp(), t.unix_timestamp() - 1);
        assert_eq!(
            c.validity().not_after.timestamp(),
            t.unix_timestamp() + 730 * 86400
        );
        serial_ok(&c);
        let ParsedExtension::KeyUsage(k) = ext(&c, "2.5.29.15").parsed_extension() else {
            panic!()
        };
        assert!(ext(&c, "2.5.29.15").critical);
        assert!(k.digital_signature() && k.key_encipherment() && !k.key_cert_sign());
        let eku = ext(&c, "2.5.29.37");
        assert!(!eku.critical);
        let ParsedExtension::ExtendedKeyUsage(e) = eku.parsed_extension() else {
            panic!()
        };
        assert!(e.server_auth && !e.client_auth && e.other.is_empty());
        let bc = ext(&c, "2.5.29.19");
        assert!(bc.critical);
        let ParsedExtension::BasicConstraints(b) = bc.parsed_extension() else {
            panic!()
        };
        assert!(!b.ca);
        assert_eq!(info.skid.as_deref(), Some(sha1_modulus(&c).as_slice()));
        assert_eq!(info.akid, Some(ca.skid()));
        assert!(!ext(&c, "2.5.29.17").critical);
        let uid = ext(&c, UID_OID);
        assert!(!uid.critical);
        let mut want = vec![0x13, 36];
        want.extend_from_slice(b"0b7c2f5e-1d3a-4c8e-9f6a-2b1c3d4e5f60");
        assert_eq!(uid.value, want.as_slice());
        // Nothing else: no IP SANs, AIA, CRL DP, policies, name constraints.
        let mut oids: Vec<String> = c
            .extensions()
            .iter()
            .map(|e| e.oid.to_id_string())
            .collect();
        oids.sort();
        assert_eq!(
            oids,
            vec![
                UID_OID,
                "2.5.29.14",
                "2.5.29.15",
                "2.5.29.17",
                "2.5.29.19",
                "2.5.29.35",
                "2.5.29.37"
            ]
        );
        assert!(
            needs_reissue(
                Some(leaf.cert_chain_pem.as_bytes()),
                &ca,
                &expected,
                std::time::Duration::from_secs(3600),
                t
            )
            .is_none()
        );
    }
}

#[test]
fn long_cn_not_truncated() {
    let t = now();
    let ca = SigningCa::create(
        &CaConfig {
            key_algorithm: KeyAlgorithm::EcdsaP256,
            ..CaConfig::default()
        },
        t,
    )
    .unwrap();
    let svc = "s".repeat(63);
    let ns = "n".repeat(63);
    let key = generate_key(KeyAlgorithm::EcdsaP256).unwrap();
    let leaf = issue_serving(&ca, &req(&svc, &ns, true, ChainOrder::Portable), key, t).unwrap();
    let info = &parse_pem_certs(leaf.cert_chain_pem.as_bytes()).unwrap()[0];
    assert_eq!(info.subject_cn, format!("*.{svc}.{ns}.svc"));
    assert!(info.subject_cn.len() > 64);
}

#[test]
fn ecdsa_profile() {
    let t = now();
    let cfg = CaConfig {
        key_algorithm: KeyAlgorithm::EcdsaP384,
        ..CaConfig::default()
    };
    let ca = SigningCa::create(&cfg, t).unwrap();
    assert!(
        ca.tls_key_pem()
            .starts_with("-----BEGIN EC PRIVATE KEY-----\n")
    );
    let ca_der = ders(&ca.tls_crt_pem()).remove(0);
    let c = parse(&ca_der);
    let ParsedExtension::KeyUsage(k) = ext(&c, "2.5.29.15").parsed_extension() else {
        panic!()
    };
    assert!(k.digital_signature() && k.key_cert_sign() && !k.key_encipherment());
    assert_eq!(
        c.signature_algorithm.algorithm.to_id_string(),
        "1.2.840.10045.4.3.3"
    );
    let key = generate_key(KeyAlgorithm::EcdsaP256).unwrap();
    let leaf = issue_serving(&ca, &req("foo", "bar", false, ChainOrder::Portable), key, t).unwrap();
    assert!(leaf.key_pem.starts_with("-----BEGIN EC PRIVATE KEY-----\n"));
    let chain = ders(&leaf.cert_chain_pem);
    let l = parse(&chain[0]);
    let ParsedExtension::KeyUsage(k) = ext(&l, "2.5.29.15").parsed_extension() else {
        panic!()
    };
    assert!(k.digital_signature() && !k.key_encipherment());
    // SKID = SHA-256(uncompressed point)[..20]
    let point = l.public_key().subject_public_key.data.to_vec();
    let want =
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &point).as_ref()[..20].to_vec();
    assert_eq!(CertInfo::from_der(&chain[0]).unwrap().skid, Some(want));
    assert!(webpki_verify(&ca.bundle_pem(), &leaf.cert_chain_pem, "foo.bar.svc", t).is_ok());
}

#[test]
fn rotation_profile_cross_signed() {
    let t = now();
    let cfg = CaConfig::default();
    let old = SigningCa::create(&cfg, t - 700 * DAY).unwrap();
    let rot = old.rotate(&cfg, t).unwrap();
    let new = &rot.ca;
    assert_eq!(new.subject_cn(), old.subject_cn());
    let bundle = ders(&new.ca_bundle_pem().unwrap());
    assert_eq!(bundle.len(), 2);
    assert_eq!(bundle[0], ders(&new.tls_crt_pem())[0], "bundle = [NEW, A]");
    let inter = ders(&new.intermediate_pem().unwrap());
    assert_eq!(inter.len(), 1);
    let o = parse_pem_certs(old.tls_crt_pem().as_bytes())
        .unwrap()
        .remove(0);
    let n = parse_pem_certs(new.tls_crt_pem().as_bytes())
        .unwrap()
        .remove(0);
    let a = CertInfo::from_der(&bundle[1]).unwrap();
    let b = CertInfo::from_der(&inter[0]).unwrap();
    let (ax, bx, ox, nx) = (parse(&a.der), parse(&b.der), parse(&o.der), parse(&n.der));
    // A: OLD under NEW
    assert_eq!(a.subject_raw, o.subject_raw);
    assert_eq!(a.issuer_raw, n.subject_raw);
    assert_eq!(a.not_before, o.not_before);
    assert_eq!(a.skid, o.skid);
    assert_eq!(a.akid, n.skid);
    assert_ne!(a.serial_hex, o.serial_hex);
    assert_eq!(ax.public_key().raw, ox.public_key().raw);
    assert_eq!(
        a.not_after,
        o.not_after.max(t + ::time::Duration::days(183))
    );
    assert_eq!(rot.previous_trusted_until, a.not_after);
    serial_ok(&ax);
    // B: NEW under OLD
    assert_eq!(b.subject_raw, n.subject_raw);
    assert_eq!(b.issuer_raw, o.subject_raw);
    assert_eq!(b.not_before, n.not_before);
    assert_eq!(b.not_after, n.not_after);
    assert_eq!(b.skid, n.skid);
    assert_eq!(b.akid, o.skid);
    assert_ne!(b.serial_hex, n.serial_hex);
    assert_eq!(bx.public_key().raw, nx.public_key().raw);
    assert!(a.is_ca && b.is_ca);
    // Chain orders after rotation.
    let key = generate_key(KeyAlgorithm::EcdsaP256).unwrap();
    let p = issue_serving(new, &req("foo", "bar", false, ChainOrder::Portable), key, t).unwrap();
    let p = ders(&p.cert_chain_pem);
    assert_eq!((p.len(), &p[1], &p[2]), (3, &inter[0], &bundle[0]));
    let key = generate_key(KeyAlgorithm::EcdsaP256).unwrap();
    let u = issue_serving(new, &req("foo", "bar", false, ChainOrder::Upstream), key, t).unwrap();
    let u = ders(&u.cert_chain_pem);
    assert_eq!((u.len(), &u[1], &u[2]), (3, &bundle[0], &inter[0]));
    // Old leaf is now outdated by AKID.
    let old_leaf = issue(&old, "foo", "bar", ChainOrder::Portable, t);
    let names = serving_dns_names("foo", "bar", false, "cluster.local");
    assert_eq!(
        needs_reissue(
            Some(old_leaf.cert_chain_pem.as_bytes()),
            new,
            &names,
            std::time::Duration::from_secs(3600),
            t
        ),
        Some(ReissueReason::WrongIssuer)
    );
}

#[test]
fn needs_reissue_reasons() {
    let t = now();
    let ca = SigningCa::create(&CaConfig::short_rotation(), t).unwrap();
    let names = serving_dns_names("foo", "bar", false, "cluster.local");
    let hour = std::time::Duration::from_secs(3600);
    assert_eq!(
        needs_reissue(None, &ca, &names, hour, t),
        Some(ReissueReason::Missing)
    );
    assert_eq!(
        needs_reissue(Some(b""), &ca, &names, hour, t),
        Some(ReissueReason::Missing)
    );
    assert_eq!(
        needs_reissue(Some(b"garbage"), &ca, &names, hour, t),
        Some(ReissueReason::Unparsable)
    );
    let bad = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    assert_eq!(
        needs_reissue(Some(bad), &ca, &names, hour, t),
        Some(ReissueReason::Unparsable)
    );
    let mut r = req("foo", "bar", false, ChainOrder::Portable);
    r.lifetime = 2 * hour;
    let leaf = issue_serving(&ca, &r, generate_key(KeyAlgorithm::EcdsaP256).unwrap(), t).unwrap();
    let crt = leaf.cert_chain_pem.as_bytes();
    assert_eq!(needs_reissue(Some(crt), &ca, &names, hour, t), None);
    let other = serving_dns_names("foo", "bar", true, "cluster.local");
    assert_eq!(
        needs_reissue(Some(crt), &ca, &other, hour, t),
        Some(ReissueReason::WrongNames)
    );
    let late = t + ::time::Duration::minutes(61);
    assert_eq!(
        needs_reissue(Some(crt), &ca, &names, hour, late),
        Some(ReissueReason::NearExpiry)
    );
    let later = t + ::time::Duration::hours(3);
    assert_eq!(
        needs_reissue(Some(crt), &ca, &names, hour, later),
        Some(ReissueReason::Expired)
    );
    assert_eq!(ReissueReason::WrongIssuer.as_str(), "wrong_issuer");
    assert_eq!(ReissueReason::NearExpiry.to_string(), "near_expiry");
}

#[test]
fn config_and_algorithms() {
    assert!(CaConfig::default().validate().is_ok());
    assert!(CaConfig::upstream().validate().is_ok());
    assert!(CaConfig::short_rotation().validate().is_ok());
    assert_eq!(CaConfig::upstream().rotation_threshold, 395 * DAY);
    assert_eq!(CaConfig::default().rotation_threshold, 183 * DAY);
    let bad = CaConfig {
        rotation_threshold: 800 * DAY,
        ..CaConfig::default()
    };
    assert_eq!(bad.validate().unwrap_err().category(), "invalid_config");
    for a in KeyAlgorithm::ALL {
        assert_eq!(a.to_string().parse::<KeyAlgorithm>().unwrap(), a);
    }
    assert_eq!(KeyAlgorithm::default(), KeyAlgorithm::Rsa2048);
    assert_eq!(
        "rsa-1024".parse::<KeyAlgorithm>().unwrap_err().category(),
        "unknown_key_algorithm"
    );
}

#[test]
fn openssl_text_cross_check() {
    require_openssl();
    let t = now();
    let ca = SigningCa::create(&CaConfig::default(), t).unwrap();
    let key = generate_key(KeyAlgorithm::Rsa2048).unwrap();
    let leaf = issue_serving(&ca, &req("foo", "bar", true, ChainOrder::Portable), key, t).unwrap();
    let dir = tmpdir("text");
    let (l, _) = split_chain(&leaf.cert_chain_pem);
    let p = write(&dir, "leaf.pem", &l);
    let out = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(&p)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "Subject: CN = *.foo.bar.svc",
        "X509v3 Key Usage: critical",
        "Digital Signature, Key Encipherment",
        "X509v3 Basic Constraints: critical",
        "CA:FALSE",
        "TLS Web Server Authentication",
        "DNS:*.foo.bar.svc, DNS:*.foo.bar.svc.cluster.local, DNS:foo.bar.svc, DNS:foo.bar.svc.cluster.local",
        "1.3.6.1.4.1.2312.17.100.2.1:",
        "sha256WithRSAEncryption",
        "Public-Key: (2048 bit)",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
    let k = write(&dir, "key.pem", &leaf.key_pem);
    let out = std::process::Command::new("openssl")
        .args(["rsa", "-check", "-noout", "-in"])
        .arg(&k)
        .output()
        .unwrap();
    assert!(out.status.success());
    let _ = std::fs::remove_dir_all(&dir);
}
