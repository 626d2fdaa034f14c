//! PKCS#12 stores in the serving Secret (README "Beyond the original", issue 14), against a real
//! kube-apiserver: `service-ca.dev/formats: keystore.p12,truststore.p12` with the default password
//! or one from `service-ca.dev/keystore-password-secret`, kept current when the certificate, the CA
//! or the password changes, read back with the openssl CLI (required) and, when a JDK is
//! installed, with keytool and in real TLS handshakes between Java and OpenSSL.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::{
    WAIT, admission_policy, annotation, controller, current_bundle, data, service,
    service_account_client, wait_for_new_bundle, wait_secret,
};
use k8s_openapi::api::core::v1::{Event, Secret, Service};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use service_ca_controller::names;
use service_ca_testing::tls::verify_key_matches;
use service_ca_testing::{TestContext, eventually};

const BETA: &str = names::SECRET_NAME_BETA;
const STORES: (&str, &str) = (names::FORMATS, "keystore.p12,truststore.p12");
const DEFAULT_PASSWORD: &str = "changeit";

fn data_keys(s: &Secret) -> Vec<String> {
    s.data
        .as_ref()
        .map(|d| d.keys().cloned().collect())
        .unwrap_or_default()
}

fn has_stores(s: &Secret) -> bool {
    data(s, names::KEYSTORE_P12).is_some() && data(s, names::TRUSTSTORE_P12).is_some()
}

fn serial(s: &Secret) -> String {
    let crt = data(s, names::TLS_CRT).unwrap_or_default();
    service_ca_pki::parse_pem_certs(&crt).unwrap()[0]
        .serial_hex
        .clone()
}

/// DER of every certificate of a PEM text, sorted (PKCS#12 tools print bags in their own order).
fn cert_ders(pem: &[u8]) -> Vec<Vec<u8>> {
    let mut ders = service_ca_pki::pem_cert_ders(pem).unwrap();
    ders.sort();
    ders
}

/// A scratch directory removed at the end of the test.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "service-ca-keystores-{name}-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.0).ok();
    }
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos()
}

/// Runs a command; (success, stdout, stderr). A missing program fails the test.
fn run(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `openssl pkcs12` on a store with a password: the PEM it prints (None: wrong password or
/// unreadable). `nokeys`: certificates only; else the key only, unencrypted.
fn openssl_pkcs12(dir: &Scratch, store: &[u8], password: &str, nokeys: bool) -> Option<String> {
    let path = dir.write("store.p12", store);
    let mode: &[&str] = if nokeys {
        &["-nokeys"]
    } else {
        &["-nocerts", "-nodes"]
    };
    let (ok, out, _) = run(Command::new("openssl")
        .arg("pkcs12")
        .args(mode)
        .args(["-passin", &format!("pass:{password}"), "-in"])
        .arg(&path));
    ok.then_some(out)
}

/// Checks both stores of `secret` with `password` (and that `wrong` opens neither): the keystore
/// holds `tls.key` and the chain of `tls.crt`, the truststore exactly the certificates of `bundle`.
fn check_stores(dir: &Scratch, secret: &Secret, bundle: &str, password: &str, wrong: &str) {
    let keystore = data(secret, names::KEYSTORE_P12).expect("keystore.p12");
    let truststore = data(secret, names::TRUSTSTORE_P12).expect("truststore.p12");
    let crt = data(secret, names::TLS_CRT).unwrap();
    let certs = openssl_pkcs12(dir, &keystore, password, true).expect("keystore opens");
    assert_eq!(
        cert_ders(certs.as_bytes()),
        cert_ders(&crt),
        "keystore chain"
    );
    let key = openssl_pkcs12(dir, &keystore, password, false).expect("keystore key opens");
    verify_key_matches(&crt, key.as_bytes()).expect("keystore key is tls.key's");
    let trusted = openssl_pkcs12(dir, &truststore, password, true).expect("truststore opens");
    assert_eq!(
        cert_ders(trusted.as_bytes()),
        cert_ders(bundle.as_bytes()),
        "truststore = CA bundle"
    );
    assert!(openssl_pkcs12(dir, &keystore, wrong, true).is_none());
    assert!(openssl_pkcs12(dir, &truststore, wrong, true).is_none());
}

fn jdk() -> bool {
    let found = Command::new("javac").arg("-version").output().is_ok()
        && Command::new("keytool").arg("-help").output().is_ok();
    if !found {
        eprintln!("SKIPPED the Java part: no JDK (javac, keytool) on PATH");
    }
    found
}

/// keytool's verbose listing of a PKCS#12 store.
fn keytool_list(dir: &Scratch, store: &[u8], password: &str) -> String {
    let path = dir.write("keytool.p12", store);
    let (ok, out, err) = run(Command::new("keytool")
        .args([
            "-list",
            "-v",
            "-storetype",
            "PKCS12",
            "-storepass",
            password,
            "-keystore",
        ])
        .arg(&path));
    assert!(ok, "keytool -list: {out}{err}");
    out
}

async fn create(services: &Api<Service>, name: &str, annotations: &[(&str, &str)]) {
    services
        .create(&PostParams::default(), &service(name, annotations, false))
        .await
        .expect("create Service");
}

async fn put_password(secrets: &Api<Secret>, name: &str, password: &str) {
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": name},
        "stringData": {"password": password},
    }))
    .unwrap();
    secrets
        .patch(
            name,
            &PatchParams::apply("keystores-test").force(),
            &Patch::Apply(secret),
        )
        .await
        .expect("password Secret");
}

#[tokio::test]
async fn stores_with_the_default_password_follow_the_certificate_and_the_ca() {
    let ctx = TestContext::new("keystores-default").await.unwrap();
    // The shipped admission policy is in force: it must admit the new data keys.
    let sa = service_account_client(&ctx).await;
    admission_policy(&ctx, &sa, &[]).await;
    let running = controller(&ctx, |_| {}).await;
    let services: Api<Service> = ctx.api();
    let secrets: Api<Secret> = ctx.api();
    let dir = Scratch::new("default");
    create(&services, "api", &[(BETA, "api-tls"), STORES]).await;
    create(&services, "plain", &[(BETA, "plain-tls")]).await;
    let secret = wait_secret(&secrets, "api-tls", "stores written", has_stores).await;
    assert_eq!(
        data_keys(&secret),
        ["keystore.p12", "tls.crt", "tls.key", "truststore.p12"]
    );
    let bundle = current_bundle(&running);
    check_stores(&dir, &secret, &bundle, DEFAULT_PASSWORD, "wrong");
    for key in [
        names::KEYSTORE_PASSWORD_HASH,
        names::KEYSTORE_DIGEST,
        names::TRUSTSTORE_DIGEST,
    ] {
        let value = annotation(&secret.metadata, key).unwrap_or_default();
        assert_eq!(value.len(), 32, "{key}: {value:?}");
    }
    // A Service without the request: exactly the original's keys, none of the store records.
    let plain = wait_secret(&secrets, "plain-tls", "plain secret", |s| {
        data(s, names::TLS_CRT).is_some()
    })
    .await;
    assert_eq!(data_keys(&plain), ["tls.crt", "tls.key"]);
    assert!(
        !plain
            .annotations()
            .keys()
            .any(|k| k.starts_with(names::PROJECT_PREFIX)),
        "{:?}",
        plain.annotations()
    );
    if jdk() {
        let listing = keytool_list(
            &dir,
            &data(&secret, names::KEYSTORE_P12).unwrap(),
            "changeit",
        );
        assert!(listing.contains("Alias name: tls"), "{listing}");
        assert!(listing.contains("PrivateKeyEntry"), "{listing}");
        let listing = keytool_list(
            &dir,
            &data(&secret, names::TRUSTSTORE_P12).unwrap(),
            "changeit",
        );
        assert!(listing.contains("trustedCertEntry"), "{listing}");
    }

    // A truststore changed by someone else is rebuilt; the certificate is kept.
    let before = serial(&secret);
    let keystore = data(&secret, names::KEYSTORE_P12).unwrap();
    secrets
        .patch(
            "api-tls",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"truststore.p12": "Z2FyYmFnZQ=="}})),
        )
        .await
        .unwrap();
    let repaired = wait_secret(&secrets, "api-tls", "truststore rebuilt", |s| {
        data(s, names::TRUSTSTORE_P12).is_some_and(|t| t != b"garbage")
    })
    .await;
    assert_eq!(serial(&repaired), before, "not re-issued");
    assert_eq!(
        data(&repaired, names::KEYSTORE_P12).unwrap(),
        keystore,
        "the keystore is left as it was"
    );
    check_stores(&dir, &repaired, &bundle, DEFAULT_PASSWORD, "wrong");

    // A CA rotation: the truststore holds the new bundle, the keystore the new certificate.
    secrets
        .patch(
            "signing-key",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {names::FORCE_ROTATION_REQUEST: "keystores"}}}),
            ),
        )
        .await
        .unwrap();
    let new_bundle = wait_for_new_bundle(&running, &bundle, WAIT).await;
    let truststore_digest = annotation(&repaired.metadata, names::TRUSTSTORE_DIGEST)
        .unwrap()
        .to_string();
    let rotated = wait_secret(&secrets, "api-tls", "stores follow the CA", |s| {
        serial(s) != before
            && annotation(&s.metadata, names::TRUSTSTORE_DIGEST)
                .is_some_and(|d| d != truststore_digest)
    })
    .await;
    // The stores are written together with the certificate, never after it.
    check_stores(&dir, &rotated, &new_bundle, DEFAULT_PASSWORD, "wrong");
    assert!(cert_ders(new_bundle.as_bytes()).len() > cert_ders(bundle.as_bytes()).len());

    // No longer requested: the stores and their records go, the certificate stays.
    let serial_now = serial(&rotated);
    services
        .patch(
            "api",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {names::FORMATS: null}}})),
        )
        .await
        .unwrap();
    let plain = wait_secret(&secrets, "api-tls", "stores removed", |s| {
        data_keys(s) == ["tls.crt", "tls.key"]
            && annotation(&s.metadata, names::KEYSTORE_PASSWORD_HASH).is_none()
            && annotation(&s.metadata, names::KEYSTORE_DIGEST).is_none()
            && annotation(&s.metadata, names::TRUSTSTORE_DIGEST).is_none()
    })
    .await;
    assert_eq!(serial(&plain), serial_now);
    running.stop().await;
}

#[tokio::test]
async fn stores_with_a_password_from_a_secret() {
    let ctx = TestContext::new("keystores-password").await.unwrap();
    let running = controller(&ctx, |_| {}).await;
    let services: Api<Service> = ctx.api();
    let secrets: Api<Secret> = ctx.api();
    let dir = Scratch::new("password");
    // The password Secret does not exist yet: refused, nothing written.
    create(
        &services,
        "api",
        &[
            (BETA, "api-tls"),
            STORES,
            (names::KEYSTORE_PASSWORD_SECRET, "jks-password/password"),
        ],
    )
    .await;
    let text = format!(
        "keystore password secret {}/jks-password not found",
        ctx.namespace
    );
    eventually(WAIT, "ServingCertFailed event", || async {
        Api::<Event>::namespaced(ctx.client.clone(), &ctx.namespace)
            .list(&ListParams::default())
            .await
            .ok()?
            .items
            .into_iter()
            .any(|e| {
                e.involved_object.name.as_deref() == Some("api")
                    && e.reason.as_deref() == Some("ServingCertFailed")
                    && e.message.as_deref().is_some_and(|m| m.contains(&text))
            })
            .then_some(())
    })
    .await;
    let svc = services.get("api").await.unwrap();
    assert!(
        annotation(&svc.metadata, names::ERROR_BETA).is_some_and(|e| e.contains(&text)),
        "{:?}",
        svc.annotations()
    );
    assert!(secrets.get_opt("api-tls").await.unwrap().is_none());

    // It appears: the Secret is written with that password (and not with the default).
    let started = tokio::time::Instant::now();
    put_password(&secrets, "jks-password", "s3cret pass").await;
    let secret = wait_secret(&secrets, "api-tls", "stores written", has_stores).await;
    eprintln!(
        "written {:?} after the password Secret appeared",
        started.elapsed()
    );
    let bundle = current_bundle(&running);
    check_stores(&dir, &secret, &bundle, "s3cret pass", DEFAULT_PASSWORD);
    let svc = services.get("api").await.unwrap();
    assert_eq!(annotation(&svc.metadata, names::ERROR_BETA), None);
    if jdk() {
        let listing = keytool_list(
            &dir,
            &data(&secret, names::KEYSTORE_P12).unwrap(),
            "s3cret pass",
        );
        assert!(listing.contains("PrivateKeyEntry"), "{listing}");
    }

    // The password changes: both stores are rebuilt with it, the certificate is kept.
    let before = serial(&secret);
    let hash = annotation(&secret.metadata, names::KEYSTORE_PASSWORD_HASH)
        .unwrap()
        .to_string();
    put_password(&secrets, "jks-password", "n3w-secret").await;
    let rebuilt = wait_secret(&secrets, "api-tls", "stores rebuilt", |s| {
        annotation(&s.metadata, names::KEYSTORE_PASSWORD_HASH).is_some_and(|h| h != hash)
    })
    .await;
    assert_eq!(serial(&rebuilt), before, "not re-issued");
    check_stores(&dir, &rebuilt, &bundle, "n3w-secret", "s3cret pass");
    running.stop().await;
}

/// A Java program of the tests, compiled once per test into `dir`.
fn javac(dir: &Path, class: &str, source: &str) {
    let file = dir.join(format!("{class}.java"));
    std::fs::write(&file, source).unwrap();
    let (ok, out, err) = run(Command::new("javac").arg("-d").arg(dir).arg(&file));
    assert!(ok, "javac {class}: {out}{err}");
}

const JAVA_SERVER: &str = r#"
import java.io.*;
import java.net.InetAddress;
import java.security.KeyStore;
import javax.net.ssl.*;

public class TlsServer {
    public static void main(String[] args) throws Exception {
        char[] password = args[1].toCharArray();
        KeyStore ks = KeyStore.getInstance("PKCS12");
        try (InputStream in = new FileInputStream(args[0])) { ks.load(in, password); }
        KeyManagerFactory kmf = KeyManagerFactory.getInstance(KeyManagerFactory.getDefaultAlgorithm());
        kmf.init(ks, password);
        SSLContext ctx = SSLContext.getInstance("TLS");
        ctx.init(kmf.getKeyManagers(), null, null);
        try (SSLServerSocket server = (SSLServerSocket) ctx.getServerSocketFactory()
                .createServerSocket(0, 1, InetAddress.getLoopbackAddress())) {
            System.out.println("PORT " + server.getLocalPort());
            System.out.flush();
            server.setSoTimeout(60000);
            try (SSLSocket s = (SSLSocket) server.accept()) {
                s.startHandshake();
                OutputStream out = s.getOutputStream();
                out.write("hello from java\n".getBytes());
                out.flush();
            }
        }
    }
}
"#;

const JAVA_CLIENT: &str = r#"
import java.io.*;
import java.net.Socket;
import java.security.KeyStore;
import java.util.List;
import javax.net.ssl.*;

public class TlsClient {
    public static void main(String[] args) throws Exception {
        KeyStore ts = KeyStore.getInstance("PKCS12");
        try (InputStream in = new FileInputStream(args[0])) { ts.load(in, args[1].toCharArray()); }
        TrustManagerFactory tmf = TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm());
        tmf.init(ts);
        SSLContext ctx = SSLContext.getInstance("TLS");
        ctx.init(null, tmf.getTrustManagers(), null);
        String host = args[2];
        int port = Integer.parseInt(args[3]);
        Socket plain = new Socket("127.0.0.1", port);
        // Layered over a connection to 127.0.0.1, but verified for the Service's name.
        try (SSLSocket s = (SSLSocket) ctx.getSocketFactory().createSocket(plain, host, port, true)) {
            SSLParameters p = s.getSSLParameters();
            p.setEndpointIdentificationAlgorithm("HTTPS");
            p.setServerNames(List.of(new SNIHostName(host)));
            s.setSSLParameters(p);
            s.startHandshake();
            OutputStream out = s.getOutputStream();
            out.write("GET / HTTP/1.0\r\n\r\n".getBytes());
            out.flush();
            BufferedReader reader = new BufferedReader(new InputStreamReader(s.getInputStream()));
            System.out.println("GOT " + reader.readLine());
        }
    }
}
"#;

/// Kills a child process at the end of the test, whatever happens.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        self.0.kill().ok();
        self.0.wait().ok();
    }
}

/// Reads lines of `child`'s stdout until one starts with `prefix`; returns the rest of it.
fn wait_line(child: &mut Child, prefix: &str) -> String {
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    loop {
        match lines.next() {
            Some(Ok(line)) if line.starts_with(prefix) => {
                return line[prefix.len()..].trim().to_string();
            }
            Some(Ok(_)) => continue,
            other => panic!("no {prefix:?} line: {other:?}"),
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Real TLS between Java and OpenSSL with the stores the controller wrote: a Java server with
/// keystore.p12, verified by `openssl s_client` against the CA bundle; and a Java client trusting
/// only truststore.p12, talking to `openssl s_server` with tls.crt/tls.key. Both verify the
/// Service's DNS name. Skipped only without a JDK.
#[tokio::test]
async fn java_and_openssl_handshake_with_the_stores() {
    if !jdk() {
        return;
    }
    let ctx = TestContext::new("keystores-java").await.unwrap();
    let running = controller(&ctx, |_| {}).await;
    let services: Api<Service> = ctx.api();
    let secrets: Api<Secret> = ctx.api();
    let dir = Scratch::new("java");
    let password = "java-pw";
    put_password(&secrets, "jks", password).await;
    create(
        &services,
        "api",
        &[
            (BETA, "api-tls"),
            STORES,
            (names::KEYSTORE_PASSWORD_SECRET, "jks/password"),
        ],
    )
    .await;
    let secret = wait_secret(&secrets, "api-tls", "stores written", has_stores).await;
    let host = format!("api.{}.svc", ctx.namespace);
    let keystore = dir.write("keystore.p12", &data(&secret, names::KEYSTORE_P12).unwrap());
    let truststore = dir.write(
        "truststore.p12",
        &data(&secret, names::TRUSTSTORE_P12).unwrap(),
    );
    let crt = dir.write("tls.crt", &data(&secret, names::TLS_CRT).unwrap());
    let key = dir.write("tls.key", &data(&secret, names::TLS_KEY).unwrap());
    let ca = dir.write("ca.crt", current_bundle(&running).as_bytes());
    running.stop().await;
    javac(&dir.0, "TlsServer", JAVA_SERVER);
    javac(&dir.0, "TlsClient", JAVA_CLIENT);

    // Java serves with keystore.p12; openssl verifies the chain and the name against the CA.
    let mut server = Reaped(
        Command::new("java")
            .arg("-cp")
            .arg(&dir.0)
            .arg("TlsServer")
            .arg(&keystore)
            .arg(password)
            .stdout(Stdio::piped())
            .spawn()
            .expect("java"),
    );
    let port = wait_line(&mut server.0, "PORT ");
    let (ok, out, err) = run(Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
        .args(["-servername", &host, "-verify_hostname", &host])
        .args(["-verify_return_error", "-CAfile"])
        .arg(&ca)
        .stdin(Stdio::null()));
    assert!(ok, "s_client against the Java server: {out}{err}");
    assert!(out.contains("Verify return code: 0 (ok)"), "{out}");
    drop(server);

    // openssl serves tls.crt/tls.key; Java trusts only truststore.p12.
    let port = free_port().to_string();
    let mut server = Reaped(
        Command::new("openssl")
            .args(["s_server", "-www", "-accept", &format!("127.0.0.1:{port}")])
            .arg("-cert")
            .arg(&crt)
            .arg("-key")
            .arg(&key)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("openssl s_server"),
    );
    wait_line(&mut server.0, "ACCEPT");
    let (ok, out, err) = run(Command::new("java")
        .arg("-cp")
        .arg(&dir.0)
        .arg("TlsClient")
        .arg(&truststore)
        .arg(password)
        .arg(&host)
        .arg(&port));
    assert!(ok, "Java client against openssl s_server: {out}{err}");
    assert!(out.contains("GOT HTTP/1.0 200 ok"), "{out}{err}");
    // The name is verified: another name fails.
    let (ok, out, err) = run(Command::new("java")
        .arg("-cp")
        .arg(&dir.0)
        .arg("TlsClient")
        .arg(&truststore)
        .arg(password)
        .arg("other.example.com")
        .arg(&port));
    assert!(!ok, "a wrong name must fail: {out}{err}");
    assert!(err.contains("No subject alternative DNS name"), "{err}");
    drop(server);
}
