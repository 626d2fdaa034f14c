//! The fuzz corpora (`fuzz/corpus/<target>/`) replayed through the functions the fuzz targets
//! call (docs/reliability.md, "Fuzzing"), so that what the fuzzer once found stays fixed. No
//! cluster needed.
//!
//! `regenerate_seeds` (ignored) wrote the hand-made seeds and the fixed CA of `serving_secret`:
//! `cargo test -p service-ca-controller --test fuzz_corpus -- --ignored regenerate_seeds`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use service_ca_controller::fuzzing;
use service_ca_controller::names;
use service_ca_pki::fuzzing::{self as pki, run_corpus};
use service_ca_pki::{KeyAlgorithm, SigningCa, generate_key, issue_serving};
use time::OffsetDateTime;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

fn replay(target: &str, body: impl Fn(&[u8])) {
    let ran = run_corpus(target, body).unwrap_or_else(|e| panic!("{target}: {e}"));
    assert!(ran > 0);
}

fn serving_ca() -> SigningCa {
    let path = fuzz_dir().join("fixtures/serving-ca");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    fuzzing::serving_ca(&bytes).expect("fuzz/fixtures/serving-ca holds a usable CA")
}

#[test]
fn annotations_corpus() {
    replay("annotations", fuzzing::annotations);
}

#[test]
fn ca_secret_corpus() {
    replay("ca_secret", fuzzing::ca_secret);
}

#[test]
fn serving_secret_corpus() {
    let ca = serving_ca();
    replay("serving_secret", |data| fuzzing::serving_secret(&ca, data));
}

/// The replay fails on a missing or empty corpus instead of passing on nothing.
#[test]
fn an_empty_corpus_fails_the_replay() {
    assert!(run_corpus("no-such-target", |_| {}).is_err());
    assert!(run_corpus("annotations", |_| panic!("boom")).is_err());
}

// ---- seeds -------------------------------------------------------------------------------------

/// Fields joined with NUL, the targets' input format.
fn join(fields: &[&[u8]]) -> Vec<u8> {
    fields.join(&0u8)
}

fn write(target: &str, name: &str, data: &[u8]) {
    let dir = fuzz_dir().join("corpus").join(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("seed-{name}")), data).unwrap();
}

/// `openssl pkcs8 -topk8`: the PKCS#8 form of a PEM key.
fn pkcs8(pem: &str) -> String {
    let mut child = Command::new("openssl")
        .args(["pkcs8", "-topk8", "-nocrypt"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("openssl");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(pem.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

fn ca_fields(ca: &SigningCa) -> Vec<u8> {
    let bundle = ca.ca_bundle_pem().unwrap_or_default();
    let intermediate = ca.intermediate_pem().unwrap_or_default();
    join(&[
        ca.tls_crt_pem().as_bytes(),
        ca.tls_key_pem().as_bytes(),
        bundle.as_bytes(),
        intermediate.as_bytes(),
    ])
}

#[test]
#[ignore = "writes fuzz/corpus seeds and fuzz/fixtures/serving-ca"]
fn regenerate_seeds() {
    const DAY: Duration = Duration::from_secs(86_400);
    let now = pki::now();
    let cfg = pki::fast_ca_config();
    let rsa_cfg = service_ca_pki::CaConfig::default();

    // ca_secret (and the fixed CA of serving_secret: P-256, rotated a day ago).
    let rsa = SigningCa::create(&rsa_cfg, now - 2 * DAY).unwrap();
    let old = SigningCa::create(&cfg, now - 2 * DAY).unwrap();
    let rotated = old.rotate(&cfg, now - DAY).unwrap().ca;
    std::fs::create_dir_all(fuzz_dir().join("fixtures")).unwrap();
    std::fs::write(fuzz_dir().join("fixtures/serving-ca"), ca_fields(&rotated)).unwrap();
    write("ca_secret", "rsa", &ca_fields(&rsa));
    write("ca_secret", "p256-rotated", &ca_fields(&rotated));
    let pkcs8_key = pkcs8(&rsa.tls_key_pem());
    write(
        "ca_secret",
        "rsa-pkcs8",
        &join(&[rsa.tls_crt_pem().as_bytes(), pkcs8_key.as_bytes()]),
    );
    let forced = |reason: &str, recorded: &str| {
        let mut fields = ca_fields(&rsa);
        fields.push(0);
        fields.extend(
            format!(
                "{}={reason}\n{}={recorded}\n",
                names::FORCE_ROTATION_REQUEST,
                names::FORCED_ROTATION_REASON
            )
            .as_bytes(),
        );
        fields
    };
    write(
        "ca_secret",
        "forced",
        &forced("compromise drill", "earlier"),
    );
    write("ca_secret", "forced-done", &forced("earlier", "earlier"));
    write(
        "ca_secret",
        "no-bridge",
        &forced("no-bridge: key leaked", ""),
    );
    let combined = format!("{}{}", rsa.tls_crt_pem(), rsa.tls_key_pem().as_str());
    write(
        "ca_secret",
        "combined-crt",
        &join(&[combined.as_bytes(), rsa.tls_key_pem().as_bytes()]),
    );
    let expired =
        SigningCa::create(&service_ca_pki::CaConfig::short_rotation(), now - DAY).unwrap();
    write("ca_secret", "expired", &ca_fields(&expired));
    let due = SigningCa::create(&rsa_cfg, now - 700 * DAY).unwrap();
    write("ca_secret", "due", &ca_fields(&due));
    write(
        "ca_secret",
        "refill",
        &join(&[b"", rsa.tls_key_pem().as_bytes()]),
    );
    write(
        "ca_secret",
        "mismatch",
        &join(&[rsa.tls_crt_pem().as_bytes(), old.tls_key_pem().as_bytes()]),
    );

    // pem_bundle and private_key.
    write("pem_bundle", "ca", rsa.tls_crt_pem().as_bytes());
    write("pem_bundle", "bundle", rotated.bundle_pem().as_bytes());
    write(
        "pem_bundle",
        "intermediate",
        rotated.intermediate_pem().unwrap().as_bytes(),
    );
    write("pem_bundle", "combined", combined.as_bytes());
    write(
        "pem_bundle",
        "headers",
        b"-----BEGIN CERTIFICATE-----\nProc-Type: 4,ENCRYPTED\n\nAAAA\n-----END CERTIFICATE-----\n",
    );
    for alg in KeyAlgorithm::ALL {
        if alg == KeyAlgorithm::Rsa4096 {
            continue; // slow to sign with, and no different to parse
        }
        let key = generate_key(alg).unwrap();
        write("private_key", alg.as_str(), key.pem().as_bytes());
        write(
            "private_key",
            &format!("{}-pkcs8", alg.as_str()),
            pkcs8(key.pem()).as_bytes(),
        );
    }

    // serving_secret: Service shop/api and its Secret, issued by the fixed CA a day ago.
    let extra = vec!["api.example.com".to_string(), "*.api.shop.svc".to_string()];
    let issue = |alg: KeyAlgorithm, extra: &[String], ca: &SigningCa| {
        let key = generate_key(alg).unwrap();
        issue_serving(ca, &pki::request(extra), key, now - DAY).unwrap()
    };
    let svc_annotations = |more: &str| {
        format!(
            "{}=api-tls\n{}=api-tls\n{more}",
            names::SECRET_NAME_BETA,
            names::SECRET_NAME_ALPHA
        )
    };
    let secret_annotations = |not_after: OffsetDateTime| {
        let e = service_ca_pki::rfc3339(not_after);
        format!(
            "{}={}\n{}=api\n{}={e}\n{}={e}\n{}=service-ca\n{}=x\n{}=1\n",
            names::ORIGINATING_UID_BETA,
            pki::SERVICE_UID,
            names::ORIGINATING_NAME_BETA,
            names::EXPIRY_BETA,
            names::EXPIRY_ALPHA,
            names::OWNING_COMPONENT,
            names::DESCRIPTION,
            names::RENEWED_FOR,
        )
    };
    let labels = format!(
        "{}={}\nteam=a\n",
        names::MANAGED_BY_LABEL,
        names::MANAGED_BY_VALUE
    );
    let serving = |name: &str, issued: &service_ca_pki::IssuedCert, svc: &str, rest: &[&[u8]]| {
        let secret = secret_annotations(issued.not_after);
        let mut fields: Vec<&[u8]> = vec![
            issued.cert_chain_pem.as_bytes(),
            issued.key_pem.as_bytes(),
            svc.as_bytes(),
            secret.as_bytes(),
            labels.as_bytes(),
        ];
        fields.extend_from_slice(rest);
        write("serving_secret", name, &join(&fields));
    };
    let rsa_leaf = issue(KeyAlgorithm::Rsa2048, &[], &rotated);
    let ec_leaf = issue(KeyAlgorithm::EcdsaP256, &extra, &rotated);
    let old_leaf = issue(KeyAlgorithm::EcdsaP256, &[], &old);
    serving("plain", &rsa_leaf, &svc_annotations(""), &[]);
    serving(
        "extras",
        &ec_leaf,
        &svc_annotations(&format!(
            "{}=true\n{}=tls-combined.pem\n{}=ecdsa-p256\n{}=api.example.com, *.api.shop.svc\n{}=team=a\n{}=example.com/owner=ops\n{}=1\n",
            names::INCLUDE_CA,
            names::FORMATS,
            names::KEY_ALGORITHM,
            names::EXTRA_DNS_NAMES,
            names::SECRET_LABELS,
            names::SECRET_ANNOTATIONS,
            names::RENEW_REQUEST,
        )),
        &[b"", rotated.bundle_pem().as_bytes(), b""],
    );
    serving(
        "renew",
        &rsa_leaf,
        &svc_annotations(&format!("{}=1700000000\n", names::RENEW_REQUEST)),
        &[],
    );
    serving("headless", &rsa_leaf, &svc_annotations(""), &[b"headless"]);
    serving("old-ca", &old_leaf, &svc_annotations(""), &[]);
    let ours = secret_annotations(rsa_leaf.not_after);
    let swapped = join(&[
        rsa_leaf.cert_chain_pem.as_bytes(),
        ec_leaf.key_pem.as_bytes(),
        svc_annotations("").as_bytes(),
        ours.as_bytes(),
        labels.as_bytes(),
    ]);
    write("serving_secret", "key-mismatch", &swapped);
    let missing = join(&[b"", b"", svc_annotations("").as_bytes(), ours.as_bytes()]);
    write("serving_secret", "missing", &missing);

    // annotations: name, namespace, cluster domain, then keys and values.
    let annotations = |name: &str, pairs: &[(&str, &str)]| {
        let mut fields: Vec<&[u8]> = vec![b"api", b"shop", b"cluster.local"];
        for (k, v) in pairs {
            fields.push(k.as_bytes());
            fields.push(v.as_bytes());
        }
        write("annotations", name, &join(&fields));
    };
    annotations(
        "secret-names",
        &[
            (names::SECRET_NAME_BETA, "api-tls"),
            (names::SECRET_NAME_ALPHA, "legacy-tls"),
            (names::RENEW_REQUEST, "1700000000"),
        ],
    );
    annotations(
        "errors",
        &[
            (names::SECRET_NAME_ALPHA, " "),
            (names::ERROR_BETA, "secret api-tls exists"),
            (names::ERROR_NUM_BETA, " 12 "),
            (names::ERROR_NUM_ALPHA, "-1"),
        ],
    );
    annotations(
        "extras",
        &[
            (names::INCLUDE_CA, "TRUE"),
            (names::FORMATS, "tls-combined.pem,"),
            (names::KEY_ALGORITHM, "rsa-3072"),
            (
                names::EXTRA_DNS_NAMES,
                "api.example.com,*.api.shop.svc,api.shop.svc.cluster.local",
            ),
            (names::SECRET_LABELS, "team=payments,tier=gold"),
            (
                names::SECRET_ANNOTATIONS,
                "reflector.example.com/allowed=true, note=any thing: ok",
            ),
        ],
    );
    annotations(
        "bad-extras",
        &[
            (
                names::EXTRA_DNS_NAMES,
                "*.example.com,db.shop.svc,localhost",
            ),
            (names::SECRET_LABELS, "app.kubernetes.io/managed-by=me"),
        ],
    );
    annotations(
        "inject",
        &[
            (names::INJECT_BETA, "True"),
            (names::INJECT_LEGACY, "true"),
            (names::FORCE_ROTATION_REQUEST, "no-bridge: leaked"),
        ],
    );

    // config_file.
    let config = |name: &str, text: &str| write("config_file", name, text.as_bytes());
    config(
        "all",
        "namespace: openshift-service-ca\nca-secret: signing-key\nbundle-configmap: signing-cabundle\n\
         publish-bundle-to: kube-public/service-ca\nca-lifetime: 790d\nrotation-threshold: 183d\n\
         trust-bridge-min: 183d\nleaf-lifetime: 730d\nrenew-before: 30d\nca-key-algorithm: rsa-2048\n\
         leaf-key-algorithm: ecdsa-p256\ncluster-domain: cluster.local\nchain-order: upstream\n\
         concurrency: 16\ndeny-namespaces: kube-system, kube-public\nwatch-namespace: shop\n\
         cluster-scoped-injection: false\nlegacy-injector: true\nallow-external-wildcards: true\n\
         legacy-ca-file: /var/run/secrets/kubernetes.io/serviceaccount/ca.crt\n",
    );
    config("short", "short-rotation: true\nrenew-before: 1h\n");
    config(
        "json",
        r#"{"concurrency": 4, "renew-before": "2d", "short-rotation": false, "ca-lifetime": "2h30m"}"#,
    );
    config("bad", "renew-before: 1y\nconcurrency: [4]\n");
    config("anchors", "a: &x 5\nconcurrency: *x\n");
}
