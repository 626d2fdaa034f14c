//! e2e: the operator subcommands (`status`, `inspect`, `rotate ca`, `renew`, `issue`) as a user
//! runs them: the real binary, a kubeconfig, a real control plane, and the controllers started
//! in-process for the test's namespace (which also holds the CA, via `--ca-namespace`).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use kube::Api;
use kube::api::PostParams;
use serde_json::{Value, json};
use service_ca_controller::{Config, Running, names};
use service_ca_testing::{TestContext, eventually};

const WAIT: Duration = Duration::from_secs(60);

/// One run of the binary.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit code {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Runs `service-ca ARGS` without a terminal (no colours, no prompts), asynchronously so the
/// in-process controllers keep running.
async fn service_ca<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Run {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_service-ca"))
        .args(args)
        .env_remove("KUBECONFIG")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .await
        .expect("run the service-ca binary");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `SUBCOMMAND... --kubeconfig K -n NS --ca-namespace NS EXTRA...`.
fn with_cluster(ctx: &TestContext, kubeconfig: &Path, sub: &[&str], extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = sub.iter().map(|s| s.to_string()).collect();
    v.extend([
        "--kubeconfig".into(),
        kubeconfig.display().to_string(),
        "-n".into(),
        ctx.namespace.clone(),
        "--ca-namespace".into(),
        ctx.namespace.clone(),
    ]);
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

/// Starts the controllers for the test's namespace (CA there too) and waits until they are ready.
async fn controller(ctx: &TestContext, tweak: impl FnOnce(&mut Config)) -> Running {
    let mut cfg = Config {
        namespace: ctx.namespace.clone(),
        watch_namespace: Some(ctx.namespace.clone()),
        cluster_scoped_injection: false,
        key_pool_size: 2,
        ..Config::default()
    };
    tweak(&mut cfg);
    let running = service_ca_controller::start(ctx.client.clone(), cfg).expect("valid config");
    tokio::time::timeout(WAIT, running.wait_ready())
        .await
        .expect("controllers ready in time");
    running
}

fn service(name: &str, secret: &str) -> Service {
    serde_json::from_value(json!({
        "metadata": {"name": name, "annotations": {names::SECRET_NAME_BETA: secret}},
        "spec": {"ports": [{"port": 443, "targetPort": 8443}], "selector": {"app": name}},
    }))
    .expect("static Service")
}

fn data(secret: &Secret, key: &str) -> Option<Vec<u8>> {
    secret.data.as_ref()?.get(key).map(|b| b.0.clone())
}

fn annotation<'a>(meta: &'a kube::api::ObjectMeta, key: &str) -> Option<&'a str> {
    meta.annotations.as_ref()?.get(key).map(String::as_str)
}

/// Creates a Service requesting `secret` and waits until the Secret holds a certificate.
async fn issued(ctx: &TestContext, name: &str, secret: &str) -> Secret {
    let services: Api<Service> = ctx.api();
    services
        .create(&PostParams::default(), &service(name, secret))
        .await
        .expect("create Service");
    let secrets: Api<Secret> = ctx.api();
    eventually(WAIT, &format!("Secret {secret} issued"), || async {
        secrets
            .get_opt(secret)
            .await
            .ok()
            .flatten()
            .filter(|s| data(s, names::TLS_CRT).is_some())
    })
    .await
}

fn leaf_serial(secret: &Secret) -> String {
    let crt = data(secret, names::TLS_CRT).expect("tls.crt");
    service_ca_pki::parse_pem_certs(&crt).expect("certificates")[0]
        .serial_hex
        .clone()
}

/// A Role granting `get` and `list` on `resources` in the test's namespace to user `user`.
async fn grant(ctx: &TestContext, user: &str, resources: &[&str]) {
    use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
    let api = |kind: &str| -> Api<DynamicObject> {
        let gvk = GroupVersionKind::gvk("rbac.authorization.k8s.io", "v1", kind);
        Api::namespaced_with(
            ctx.client.clone(),
            &ctx.namespace,
            &ApiResource::from_gvk(&gvk),
        )
    };
    let object = |v: Value| -> DynamicObject { serde_json::from_value(v).expect("RBAC object") };
    api("Role")
        .create(
            &PostParams::default(),
            &object(json!({
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                "metadata": {"name": user},
                "rules": [{"apiGroups": [""], "resources": resources, "verbs": ["get", "list"]}],
            })),
        )
        .await
        .expect("Role");
    api("RoleBinding")
        .create(
            &PostParams::default(),
            &object(json!({
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                "metadata": {"name": user},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": user},
                "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
            })),
        )
        .await
        .expect("RoleBinding");
}

/// A copy of the test's kubeconfig whose user impersonates `user`.
fn impersonating_kubeconfig(ctx: &TestContext, user: &str) -> PathBuf {
    let text = std::fs::read_to_string(&ctx.kubeconfig).expect("kubeconfig");
    let mut value: Value = serde_saphyr::from_str(&text).expect("kubeconfig parses");
    for u in value["users"].as_array_mut().expect("users") {
        u["user"]["as"] = Value::String(user.into());
    }
    let path = scratch_dir(&format!("{}-{user}", ctx.namespace)).join("kubeconfig");
    std::fs::write(&path, serde_saphyr::to_string(&value).expect("yaml"))
        .expect("write kubeconfig");
    path
}

fn scratch_dir(tag: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    let dir = std::env::temp_dir().join(format!(
        "service-ca-cli-{tag}-{}-{nanos}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// The value of a `name:   value` line of `inspect`'s text output.
fn fact<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .expect("file exists")
        .permissions()
        .mode()
        & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_inspect() {
    let ctx = TestContext::new("cli-status").await.expect("test context");
    let ns = ctx.namespace.clone();
    let _running = controller(&ctx, |_| {}).await;
    issued(&ctx, "api", "api-tls").await;
    let configmaps: Api<ConfigMap> = ctx.api();
    configmaps
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "trust", "annotations": {names::INJECT_BETA: "true"}},
            }))
            .expect("static ConfigMap"),
        )
        .await
        .expect("create ConfigMap");
    eventually(WAIT, "bundle injected", || async {
        configmaps
            .get_opt("trust")
            .await
            .ok()
            .flatten()
            .filter(|c| {
                c.data
                    .as_ref()
                    .is_some_and(|d| d.contains_key(names::SERVICE_CA_CRT))
            })
    })
    .await;
    let kc = ctx.kubeconfig.clone();

    // All is well: exit code 0, and the JSON says why.
    let run = service_ca(&with_cluster(&ctx, &kc, &["status"], &["-o", "json"])).await;
    assert_eq!(run.code, 0, "{run:?}");
    let report: Value = serde_json::from_str(&run.stdout).expect("status -o json parses");
    assert!(
        report["ca"]["subject"]
            .as_str()
            .unwrap()
            .starts_with("CN=openshift-service-serving-signer@"),
        "{report:#}"
    );
    assert_eq!(report["ca"]["key_type"], "RSA 2048");
    assert_eq!(report["ca"]["state"], "ok");
    assert_eq!(report["ca"]["secret"], format!("{ns}/signing-key"));
    assert_eq!(report["bundle"]["state"], "current");
    assert_eq!(report["healthy"], true);
    let serving = report["serving"].as_array().unwrap();
    assert_eq!(serving.len(), 1, "{report:#}");
    assert_eq!(serving[0]["service"], "api");
    assert_eq!(serving[0]["secret"], "api-tls");
    assert_eq!(serving[0]["state"], "ok");
    assert_eq!(
        serving[0]["dns_names"],
        json!([
            format!("api.{ns}.svc"),
            format!("api.{ns}.svc.cluster.local")
        ])
    );
    let injection = report["injection"].as_array().unwrap();
    assert_eq!(injection.len(), 1);
    assert_eq!(injection[0]["kind"], "ConfigMap");
    assert_eq!(injection[0]["state"], "current");

    // The table, and YAML.
    let table = service_ca(&with_cluster(&ctx, &kc, &["status"], &[])).await;
    assert_eq!(table.code, 0, "{table:?}");
    eprintln!("--- service-ca status (healthy)\n{}", table.stdout);
    for text in [
        "SERVING CERTIFICATES",
        "api-tls",
        "INJECTION TARGETS",
        "All is well.",
    ] {
        assert!(table.stdout.contains(text), "{text:?} in {table:?}");
    }
    assert!(
        !table.stdout.contains('\x1b'),
        "no colours without a terminal"
    );
    let yaml = service_ca(&with_cluster(&ctx, &kc, &["status"], &["-o", "yaml"])).await;
    assert_eq!(yaml.code, 0, "{yaml:?}");
    let parsed: Value = serde_saphyr::from_str(&yaml.stdout).expect("status -o yaml parses");
    assert_eq!(parsed["serving"][0]["state"], "ok");

    // Every namespace (and cluster-scoped targets): other tests' Secrets have other CAs, so only
    // the shape is checked.
    let run = service_ca(&[
        "status",
        "--kubeconfig",
        kc.to_str().unwrap(),
        "--ca-namespace",
        &ns,
        "-A",
        "-o",
        "json",
    ])
    .await;
    assert!(run.code == 0 || run.code == 1, "{run:?}");
    let all: Value = serde_json::from_str(&run.stdout).expect("status -A -o json parses");
    assert_eq!(all["scope"], "all namespaces");
    assert!(
        all["serving"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["namespace"] == ns.as_str() && r["state"] == "ok"),
        "{all:#}"
    );
    let run = service_ca(&["status", "-n", "x", "-A"]).await;
    assert_eq!(run.code, 2, "-n and -A conflict: {run:?}");

    // inspect secret: SANs, chain, "verified by" the bundle's current CA.
    let run = service_ca(&with_cluster(
        &ctx,
        &kc,
        &["inspect", "secret", &format!("{ns}/api-tls")],
        &[],
    ))
    .await;
    assert_eq!(run.code, 0, "{run:?}");
    eprintln!("--- service-ca inspect secret\n{}", run.stdout);
    for text in [
        format!("api.{ns}.svc, api.{ns}.svc.cluster.local"),
        "verified by".into(),
        "(current CA)".into(),
        "order: leaf, CA (self-signed)".into(),
    ] {
        assert!(run.stdout.contains(&text), "{text:?} in {run:?}");
    }
    assert_eq!(
        fact(&run.stdout, "leaf signed by the current CA"),
        Some("yes"),
        "{run:?}"
    );
    assert_eq!(
        fact(&run.stdout, "tls.key"),
        Some("RSA 2048, matches the certificate"),
        "{run:?}"
    );
    let run = service_ca(&with_cluster(
        &ctx,
        &kc,
        &["inspect", "secret", "api-tls"],
        &["-o", "json"],
    ))
    .await;
    assert_eq!(run.code, 0, "{run:?}");
    let inspection: Value = serde_json::from_str(&run.stdout).expect("inspect -o json parses");
    let leaf = &inspection["sections"][0]["certificates"][0];
    assert_eq!(leaf["role"], "leaf");
    assert!(
        leaf["verified_by"][0]
            .as_str()
            .unwrap()
            .starts_with("bundle[0] CN=openshift-service-serving-signer@")
    );

    // inspect bundle (the CA's, by default) and an injected ConfigMap; inspect ca.
    let run = service_ca(&with_cluster(&ctx, &kc, &["inspect", "bundle"], &[])).await;
    assert_eq!(run.code, 0, "{run:?}");
    for text in [
        "ca-bundle.crt (1 certificate",
        "verified by",
        "itself (self-signed)",
    ] {
        assert!(run.stdout.contains(text), "{text:?} in {run:?}");
    }
    assert_eq!(
        fact(&run.stdout, "holds the current bundle"),
        Some("yes"),
        "{run:?}"
    );
    let run = service_ca(&with_cluster(
        &ctx,
        &kc,
        &["inspect", "bundle", &format!("{ns}/trust")],
        &[],
    ))
    .await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.contains("service-ca.crt (1 certificate"),
        "{run:?}"
    );
    let run = service_ca(&with_cluster(&ctx, &kc, &["inspect", "ca"], &[])).await;
    assert_eq!(run.code, 0, "{run:?}");
    eprintln!("--- service-ca inspect ca\n{}", run.stdout);
    for text in [
        "tls.crt (1 certificate",
        "RSA 2048",
        "itself (self-signed)",
        "rotations:",
        "holds the current bundle",
    ] {
        assert!(run.stdout.contains(text), "{text:?} in {run:?}");
    }

    // Errors name the object and what to do.
    let run = service_ca(&with_cluster(
        &ctx,
        &kc,
        &["inspect", "secret", "nope"],
        &[],
    ))
    .await;
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains(&format!("Secret {ns}/nope not found")),
        "{run:?}"
    );
    let run = service_ca(&with_cluster(
        &ctx,
        &kc,
        &["status"],
        &["--ca-secret", "missing"],
    ))
    .await;
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr
            .contains(&format!("CA Secret {ns}/missing not found")),
        "{run:?}"
    );

    // A read-only user (get/list, no Lease access): still works; what it cannot see is a note.
    grant(&ctx, "viewer", &["secrets", "services", "configmaps"]).await;
    let viewer = impersonating_kubeconfig(&ctx, "viewer");
    let run = eventually(WAIT, "status as the read-only user", || async {
        let run = service_ca(&with_cluster(&ctx, &viewer, &["status"], &["-o", "json"])).await;
        (run.code == 0).then_some(run)
    })
    .await;
    let report: Value = serde_json::from_str(&run.stdout).expect("status -o json parses");
    assert_eq!(report["serving"][0]["state"], "ok", "{report:#}");
    assert!(
        report["notes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n.as_str().unwrap().contains("Lease")
                && n.as_str().unwrap().contains("forbidden")),
        "{report:#}"
    );
    // A user who may read no Secret at all (like the built-in `view` role): the CA comes from the
    // bundle ConfigMap, serving certificates from their Services' annotations.
    grant(&ctx, "auditor", &["services", "configmaps"]).await;
    let auditor = impersonating_kubeconfig(&ctx, "auditor");
    let run = eventually(WAIT, "status as a user without Secret access", || async {
        let run = service_ca(&with_cluster(&ctx, &auditor, &["status"], &["-o", "json"])).await;
        (run.code == 0).then_some(run)
    })
    .await;
    let report: Value = serde_json::from_str(&run.stdout).expect("status -o json parses");
    assert_eq!(report["ca"]["source"], "bundle-configmap", "{report:#}");
    assert_eq!(report["serving"][0]["state"], "unknown", "{report:#}");
    assert!(
        report["ca"]["subject"]
            .as_str()
            .unwrap()
            .starts_with("CN=openshift-service-serving-signer@")
    );

    // Rotating needs `patch` on the CA Secret: refused, saying which permission is missing.
    let run = service_ca(&with_cluster(&ctx, &viewer, &["rotate", "ca"], &["--yes"])).await;
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr
            .contains("forbidden; your user needs `patch` on secrets"),
        "{run:?}"
    );

    // A Service whose Secret belongs to someone else: exit code 1 and the controller's error.
    let secrets: Api<Secret> = ctx.api();
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": "web-tls"}, "stringData": {"password": "x"}}),
            )
            .expect("static Secret"),
        )
        .await
        .expect("create foreign Secret");
    let services: Api<Service> = ctx.api();
    services
        .create(&PostParams::default(), &service("web", "web-tls"))
        .await
        .expect("create Service");
    eventually(WAIT, "the refusal recorded on Service web", || async {
        services
            .get_opt("web")
            .await
            .ok()
            .flatten()
            .filter(|s| annotation(&s.metadata, names::ERROR_BETA).is_some())
    })
    .await;
    let run = service_ca(&with_cluster(&ctx, &kc, &["status"], &["-o", "json"])).await;
    assert_eq!(run.code, 1, "{run:?}");
    let report: Value = serde_json::from_str(&run.stdout).expect("status -o json parses");
    assert_eq!(report["healthy"], false);
    let web = report["serving"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["service"] == "web")
        .expect("a row for Service web");
    assert_eq!(web["state"], "error");
    assert!(
        web["message"]
            .as_str()
            .unwrap()
            .contains("does not have corresponding service UID"),
        "{web:#}"
    );
    let table = service_ca(&with_cluster(&ctx, &kc, &["status"], &[])).await;
    assert_eq!(table.code, 1, "{table:?}");
    eprintln!("--- service-ca status (needs attention)\n{}", table.stdout);
    assert!(table.stdout.contains("NEEDS ATTENTION"), "{table:?}");
    assert!(table.stdout.contains("error: secret"), "{table:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_ca_follows_to_convergence() {
    let ctx = TestContext::new("cli-rotate").await.expect("test context");
    let _running = controller(&ctx, |cfg| {
        let short = Config::short_rotation();
        cfg.ca = short.ca;
        cfg.leaf_lifetime = short.leaf_lifetime;
        cfg.renew_before = short.renew_before;
    })
    .await;
    let before_a = issued(&ctx, "a", "a-tls").await;
    let before_b = issued(&ctx, "b", "b-tls").await;
    let secrets: Api<Secret> = ctx.api();
    let ca_before = secrets.get("signing-key").await.expect("CA Secret");
    let kc = ctx.kubeconfig.clone();

    // Without a terminal and without --yes: refused, nothing changed.
    let run = service_ca(&with_cluster(&ctx, &kc, &["rotate", "ca"], &[])).await;
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("pass --yes"), "{run:?}");

    let run = service_ca(&with_cluster(
        &ctx,
        &kc,
        &["rotate", "ca"],
        &["--yes", "--reason", "cli-test", "--timeout", "2m"],
    ))
    .await;
    assert_eq!(run.code, 0, "{run:?}");
    eprintln!("--- service-ca rotate ca --yes\n{}", run.stdout);
    assert!(run.stdout.contains("Rotation complete"), "{run:?}");
    assert!(
        run.stdout.contains("serving certificates re-signed: 2/2"),
        "{run:?}"
    );

    // What it waited for is true.
    let ca_after = secrets.get("signing-key").await.expect("CA Secret");
    assert_ne!(
        data(&ca_after, names::TLS_CRT),
        data(&ca_before, names::TLS_CRT)
    );
    assert_eq!(
        annotation(&ca_after.metadata, names::FORCED_ROTATION_REASON),
        Some("cli-test")
    );
    let new_ca =
        &service_ca_pki::parse_pem_certs(&data(&ca_after, names::TLS_CRT).unwrap()).unwrap()[0];
    for (name, before) in [("a-tls", &before_a), ("b-tls", &before_b)] {
        let now = secrets.get(name).await.expect("serving Secret");
        let leaf =
            &service_ca_pki::parse_pem_certs(&data(&now, names::TLS_CRT).unwrap()).unwrap()[0];
        assert_eq!(leaf.akid, new_ca.skid, "{name} signed by the new CA");
        assert_ne!(leaf_serial(&now), leaf_serial(before));
    }
    let configmaps: Api<ConfigMap> = ctx.api();
    let bundle = configmaps
        .get("signing-cabundle")
        .await
        .expect("bundle ConfigMap");
    let published = bundle.data.unwrap()[names::CA_BUNDLE_CRT].clone();
    assert_eq!(
        service_ca_pki::pem_cert_ders(published.as_bytes()).unwrap(),
        service_ca_pki::pem_cert_ders(&data(&ca_after, names::CA_BUNDLE_CRT).unwrap()).unwrap()
    );
    let run = service_ca(&with_cluster(&ctx, &kc, &["inspect", "ca"], &[])).await;
    assert_eq!(run.code, 0, "{run:?}");
    for text in [
        "ca-bundle.crt (2 certificates; order: CA (self-signed), CA (cross-signed))",
        "intermediate-ca.crt (1 certificate; order: CA (cross-signed))",
        "previous CA trusted until:",
    ] {
        assert!(run.stdout.contains(text), "{text:?} in {run:?}");
    }
    assert_eq!(
        fact(&run.stdout, "last forced rotation"),
        Some("cli-test"),
        "{run:?}"
    );

    // A re-issued chain after a rotation: leaf, NEW-under-OLD, NEW; each verified by the bundle.
    let run = service_ca(&with_cluster(
        &ctx,
        &kc,
        &["inspect", "secret", "a-tls"],
        &[],
    ))
    .await;
    assert_eq!(run.code, 0, "{run:?}");
    eprintln!(
        "--- service-ca inspect secret (after a rotation)\n{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("order: leaf, CA (cross-signed), CA (self-signed)"),
        "{run:?}"
    );
    assert!(
        !run.stdout.contains("nothing in"),
        "every certificate verified: {run:?}"
    );

    // The same reason again: refused (one rotation per reason).
    let run = service_ca(&with_cluster(
        &ctx,
        &kc,
        &["rotate", "ca"],
        &["--yes", "--reason", "cli-test"],
    ))
    .await;
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("already used"), "{run:?}");

    // --no-bridge --wait=false: the prefixed request is set and the command returns at once.
    let started = std::time::Instant::now();
    let run = service_ca(&with_cluster(
        &ctx,
        &kc,
        &["rotate", "ca"],
        &[
            "--yes",
            "--no-bridge",
            "--reason",
            "compromised",
            "--wait=false",
        ],
    ))
    .await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(started.elapsed() < Duration::from_secs(20));
    let ca = secrets.get("signing-key").await.expect("CA Secret");
    assert_eq!(
        annotation(&ca.metadata, names::FORCE_ROTATION_REQUEST),
        Some("no-bridge:compromised")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renew_reissues_one_certificate() {
    let ctx = TestContext::new("cli-renew").await.expect("test context");
    let ns = ctx.namespace.clone();
    let _running = controller(&ctx, |_| {}).await;
    let before = issued(&ctx, "api", "api-tls").await;
    let kc = ctx.kubeconfig.clone();

    let run = service_ca(&with_cluster(
        &ctx,
        &kc,
        &["renew", &format!("{ns}/api")],
        &["--yes", "--wait", "--timeout", "60s"],
    ))
    .await;
    assert_eq!(run.code, 0, "{run:?}");
    eprintln!("--- service-ca renew --yes --wait\n{}", run.stdout);
    let services: Api<Service> = ctx.api();
    let svc = services.get("api").await.expect("Service");
    let token = annotation(&svc.metadata, names::RENEW_REQUEST)
        .expect("renew token on the Service")
        .to_string();
    let secrets: Api<Secret> = ctx.api();
    let after = secrets.get("api-tls").await.expect("Secret");
    assert_eq!(
        annotation(&after.metadata, names::RENEWED_FOR),
        Some(token.as_str())
    );
    assert_ne!(leaf_serial(&after), leaf_serial(&before));
    assert!(run.stdout.contains(&leaf_serial(&after)), "{run:?}");

    // A Service that requests no certificate: exit code 2 and what to do.
    services
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": "plain"}, "spec": {"ports": [{"port": 80}]}}),
            )
            .expect("static Service"),
        )
        .await
        .expect("create Service");
    let run = service_ca(&with_cluster(&ctx, &kc, &["renew", "plain"], &["--yes"])).await;
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr
            .contains("does not request a serving certificate"),
        "{run:?}"
    );
    // Unchanged when nothing was confirmed.
    let run = service_ca(&with_cluster(&ctx, &kc, &["renew", "api"], &[])).await;
    assert_eq!(run.code, 2, "{run:?}");
    let svc = services.get("api").await.expect("Service");
    assert_eq!(
        annotation(&svc.metadata, names::RENEW_REQUEST),
        Some(token.as_str())
    );
}

#[tokio::test]
async fn issue_offline_and_usage_errors() {
    let dir = scratch_dir("issue");
    let (ca_dir, out) = (dir.join("ca"), dir.join("out"));
    let run = service_ca(&[
        "issue",
        "--service",
        "api",
        "--namespace",
        "shop",
        "--ca-dir",
        ca_dir.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ])
    .await;
    assert_eq!(run.code, 0, "{run:?}");
    eprintln!("--- service-ca issue\n{}", run.stdout);
    assert!(run.stdout.contains("Created CA"), "{run:?}");
    assert_eq!(mode(&ca_dir.join("ca.key")), 0o600);
    assert_eq!(mode(&out.join("tls.key")), 0o600);
    let verify = std::process::Command::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(out.join("ca.crt"))
        .arg(out.join("tls.crt"))
        .output()
        .expect("openssl");
    assert!(
        verify.status.success(),
        "openssl verify: {}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    let verify = std::process::Command::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(ca_dir.join("ca.crt"))
        .arg(out.join("tls.crt"))
        .output()
        .expect("openssl");
    assert!(verify.status.success());
    let leaf =
        &service_ca_pki::parse_pem_certs(&std::fs::read(out.join("tls.crt")).unwrap()).unwrap()[0];
    assert_eq!(
        leaf.dns_names,
        ["api.shop.svc", "api.shop.svc.cluster.local"]
    );

    // The CA is reused; a headless Service gets the wildcard names.
    let ca_before = std::fs::read(ca_dir.join("ca.crt")).unwrap();
    let run = service_ca(&[
        "issue",
        "--service",
        "db",
        "--namespace",
        "shop",
        "--headless",
        "--cluster-domain",
        "example.internal",
        "--ca-dir",
        ca_dir.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ])
    .await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(!run.stdout.contains("Created CA"), "{run:?}");
    assert_eq!(std::fs::read(ca_dir.join("ca.crt")).unwrap(), ca_before);
    let leaf =
        &service_ca_pki::parse_pem_certs(&std::fs::read(out.join("tls.crt")).unwrap()).unwrap()[0];
    assert_eq!(leaf.subject_cn, "*.db.shop.svc");
    assert_eq!(leaf.dns_names.len(), 4);

    // A CA directory with a certificate but no key: refused, saying what to do.
    std::fs::remove_file(ca_dir.join("ca.key")).unwrap();
    let run = service_ca(&[
        "issue",
        "--service",
        "api",
        "--namespace",
        "shop",
        "--ca-dir",
        ca_dir.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ])
    .await;
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("ca.key does not"), "{run:?}");
    let run = service_ca(&[
        "issue",
        "--service",
        "Bad_Name",
        "--namespace",
        "shop",
        "--ca-dir",
        "x",
        "--out",
        "y",
    ])
    .await;
    assert_eq!(run.code, 2, "{run:?}");

    // Usage and connection errors: exit code 2.
    let run = service_ca(&["status", "--output", "xml"]).await;
    assert_eq!(run.code, 2, "{run:?}");
    let run = service_ca(&["status", "--kubeconfig", "/nonexistent/kubeconfig"]).await;
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr
            .contains("cannot read kubeconfig /nonexistent/kubeconfig"),
        "{run:?}"
    );
    let unreachable = dir.join("unreachable");
    std::fs::write(
        &unreachable,
        "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: 'https://127.0.0.1:1'}}]\nusers: [{name: u, user: {token: t}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\ncurrent-context: x\n",
    )
    .unwrap();
    let run = service_ca(&["status", "--kubeconfig", unreachable.to_str().unwrap()]).await;
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr
            .contains("cannot reach the Kubernetes API server at https://127.0.0.1:1"),
        "{run:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
