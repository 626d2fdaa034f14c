//! e2e: the release image (`make image`), unpacked like a container runtime unpacks it and run
//! from its own root filesystem against a real control plane, as the Deployment runs it.
//!
//! 1. The image: `SERVICE_CA_IMAGE` (the archive `make image` prints, or its OCI layout
//!    directory), otherwise `hack/image.sh` builds it (a static release build and the image;
//!    both are no-ops when nothing changed, so `cargo test` and `make test` work on a fresh
//!    machine and are cheap afterwards).
//! 2. Unpacked from the OCI layout alone (not from Docker's `manifest.json` that the archive also
//!    carries): `index.json` names the Deployment's image reference; the manifest, the config and
//!    every layer are checked against their digests and sizes, each layer's uncompressed digest
//!    against the config's `diff_ids`, and the layers are extracted in order into an empty root
//!    filesystem.
//! 3. The config is what the Deployment relies on: it passes only `args`, so the image's
//!    entrypoint is the binary; `runAsNonRoot` needs a numeric, non-zero user. The root
//!    filesystem has no shell and no dynamic loader: the binary has to be static.
//! 4. `deploy/base` is applied to a control plane of this test's own; the ServiceAccount files go
//!    where the kubelet mounts them (`/var/run/secrets/kubernetes.io/serviceaccount` inside the
//!    root filesystem), and the image's entrypoint runs with the container's args and env and the
//!    image's env, `chroot`ed into the unpacked root filesystem, read-only (the Deployment sets
//!    `readOnlyRootFilesystem`), as the image's user. As root: a private mount namespace and
//!    `chroot --userspec`; otherwise a user namespace where the caller is root, so the image's
//!    user cannot be taken (the test says which it used).
//! 5. `/readyz` answers 200, a Service gets a serving Secret that verifies against the CA bundle,
//!    and SIGTERM ends the process with status 0.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service};
use kube::Api;
use kube::api::PostParams;
use serde_json::{Value, json};
use service_ca_controller::names;
use service_ca_testing::container::{
    ApiServer, DumpOnPanic, SERVICEACCOUNT_DIR, Scratch, ShippedContainer, check_log, http_get,
    loopback, terminate, wait_until_ready,
};
use service_ca_testing::{TestEnv, eventually, workspace_root};

/// Every wait on the cluster is bounded by this.
const WAIT: Duration = Duration::from_secs(60);
/// How long the process may take to exit after SIGTERM.
const EXIT_WAIT: Duration = Duration::from_secs(10);
/// Field manager of the test's server-side applies.
const FIELD_MANAGER: &str = "service-ca-image-test";
/// The namespace the serving certificate is requested in.
const APP_NAMESPACE: &str = "image-app";
/// The index annotation naming an image in an OCI layout.
const REF_NAME: &str = "org.opencontainers.image.ref.name";
const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const CONFIG_TYPE: &str = "application/vnd.oci.image.config.v1+json";
const LAYER_TYPE_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const LAYER_TYPE_TAR: &str = "application/vnd.oci.image.layer.v1.tar";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_image_runs_from_its_root_filesystem() {
    let started = Instant::now();
    let objects = service_ca_testing::kustomize("deploy/base");
    let shipped = ShippedContainer::from_objects(&objects);
    let reference = shipped
        .container
        .image
        .clone()
        .expect("the Deployment's container names its image");

    // 1. The image.
    let (image, how) = obtain_image();
    let obtained_after = started.elapsed();

    // 2. Unpacked.
    let scratch = Scratch::new("service-ca-image");
    let layout = open_layout(&image, &scratch.path.join("layout"));
    let rootfs = scratch.path.join("rootfs");
    std::fs::create_dir(&rootfs).expect("rootfs dir");
    let config = unpack(&layout, &reference, &rootfs, &scratch.path);
    let unpacked_after = started.elapsed();

    // 3. The config and the root filesystem.
    assert_eq!(config["os"], "linux", "config os");
    assert_eq!(config["architecture"], "amd64", "config architecture");
    let entrypoint: Vec<String> =
        serde_json::from_value(config["config"]["Entrypoint"].clone()).expect("an Entrypoint");
    assert_eq!(
        entrypoint,
        ["/usr/local/bin/service-ca"],
        "the entrypoint (the Deployment passes only args; deploy/Dockerfile installs the binary \
         at the same path)"
    );
    assert!(
        shipped.container.command.is_none(),
        "the Deployment relies on the image's entrypoint"
    );
    let user = config["config"]["User"].as_str().unwrap_or_default();
    let (uid, gid) = user
        .split_once(':')
        .and_then(|(u, g)| Some((u.parse::<u32>().ok()?, g.parse::<u32>().ok()?)))
        .unwrap_or_else(|| panic!("User {user:?}: runAsNonRoot can only verify a numeric uid:gid"));
    assert_ne!(uid, 0, "the image runs as root");
    let home = passwd_home(&rootfs, uid);
    let binary = rootfs.join(entrypoint[0].trim_start_matches('/'));
    assert!(binary.is_file(), "{} is not in the image", entrypoint[0]);
    for absent in [
        "bin/sh",
        "lib64/ld-linux-x86-64.so.2",
        "lib/ld-linux-x86-64.so.2",
    ] {
        assert!(
            std::fs::symlink_metadata(rootfs.join(absent)).is_err(),
            "/{absent} in a distroless image"
        );
    }
    let image_env: Vec<String> =
        serde_json::from_value(config["config"]["Env"].clone()).unwrap_or_default();

    // 4. deploy/base on a control plane of its own, the process from the root filesystem.
    let env = TestEnv::start(None).expect("a dedicated testenv control plane");
    let admin = env.client().await.expect("admin client");
    let server = ApiServer::from_kubeconfig(env.kubeconfig());
    let failures = service_ca_testing::apply_all(&admin, &objects, FIELD_MANAGER).await;
    assert!(
        failures.is_empty(),
        "deploy/base does not apply cleanly:\n  {}",
        failures.join("\n  ")
    );
    let token = service_ca_testing::service_account_token(
        &admin,
        &shipped.namespace,
        &shipped.service_account,
    )
    .await;
    // /var/run is a link to /run in the image, as in distroless: resolved inside the rootfs.
    let sa_dir = inside(&rootfs, &Path::new("/var/run").join(SERVICEACCOUNT_DIR));
    server.write_service_account_files(&sa_dir, &token, &shipped.namespace);

    let (args, admin_addr) = shipped.args_and_admin_address();
    let sandbox = Sandbox::for_this_process();
    let log_path = scratch.path.join("service-ca.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let mut command: tokio::process::Command = sandbox
        .command(&rootfs, uid, gid, &entrypoint, &args)
        .into();
    command
        // What a container runtime gives the process: the image's env, HOME from the image's
        // /etc/passwd, the in-cluster variables and the container's env. Nothing of the test's.
        .env_clear()
        .envs(image_env.iter().filter_map(|kv| kv.split_once('=')))
        .env("HOME", &home)
        .env("KUBERNETES_SERVICE_HOST", &server.host)
        .env("KUBERNETES_SERVICE_PORT", server.port.to_string())
        .envs(shipped.env())
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log file"))
        .stderr(log)
        .kill_on_drop(true);
    let mut child = command
        .spawn()
        .expect("spawn service-ca under unshare and chroot");
    let _dump = DumpOnPanic(log_path.clone());

    // 5. Ready, a serving certificate, a clean exit.
    let probe_addr = loopback(admin_addr);
    let readiness = shipped.readiness_path();
    wait_until_ready(&mut child, probe_addr, &readiness, WAIT).await;
    let ready_after = started.elapsed();
    let pid = child.id().expect("service-ca is running");
    sandbox.check_process(pid, uid, &binary);
    assert_eq!(
        http_get(probe_addr, &shipped.liveness_path())
            .await
            .map(|(s, _)| s),
        Some(200),
        "liveness probe"
    );

    Api::<Namespace>::all(admin.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": APP_NAMESPACE}}))
                .expect("namespace"),
        )
        .await
        .unwrap_or_else(|e| panic!("namespace {APP_NAMESPACE}: {e}"));
    let service = json!({
        "metadata": {"name": "api", "annotations": {names::SECRET_NAME_BETA: "api-tls"}},
        "spec": {"ports": [{"name": "https", "port": 443, "targetPort": 8443}]},
    });
    Api::<Service>::namespaced(admin.clone(), APP_NAMESPACE)
        .create(
            &PostParams::default(),
            &serde_json::from_value(service).expect("service"),
        )
        .await
        .unwrap_or_else(|e| panic!("service {APP_NAMESPACE}/api: {e}"));
    let chain = eventually(WAIT, &format!("Secret {APP_NAMESPACE}/api-tls"), || {
        let api: Api<Secret> = Api::namespaced(admin.clone(), APP_NAMESPACE);
        async move {
            let data = api.get_opt("api-tls").await.ok().flatten()?.data?;
            data.contains_key(names::TLS_KEY)
                .then(|| data.get(names::TLS_CRT).map(|c| c.0.clone()))
                .flatten()
        }
    })
    .await;
    let bundle = eventually(WAIT, "the bundle ConfigMap", || {
        let api: Api<ConfigMap> = Api::namespaced(admin.clone(), &shipped.namespace);
        async move {
            api.get_opt(names::DEFAULT_BUNDLE_CONFIGMAP)
                .await
                .ok()
                .flatten()
                .and_then(|cm| cm.data?.get(names::CA_BUNDLE_CRT).cloned())
        }
    })
    .await;
    service_ca_testing::tls::verify_chain(&bundle, &chain, &format!("api.{APP_NAMESPACE}.svc"))
        .unwrap_or_else(|e| panic!("{APP_NAMESPACE}/api-tls against the bundle: {e}"));
    let checked_after = started.elapsed();

    terminate(&mut child, EXIT_WAIT).await;
    check_log(&log_path);
    eprintln!(
        "image: {} ({how}) after {:.1}s, unpacked after {:.1}s, testenv {:.1}s, ready after \
         {:.1}s, certificate after {:.1}s, total {:.1}s ({})",
        image.display(),
        obtained_after.as_secs_f64(),
        unpacked_after.as_secs_f64(),
        env.startup.as_secs_f64(),
        ready_after.as_secs_f64(),
        checked_after.as_secs_f64(),
        started.elapsed().as_secs_f64(),
        sandbox.describe(),
    );
}

/// The image archive or layout: `SERVICE_CA_IMAGE`, or what `hack/image.sh` builds (the last line
/// of its stdout), and how it was obtained.
fn obtain_image() -> (PathBuf, &'static str) {
    if let Some(path) = std::env::var_os("SERVICE_CA_IMAGE") {
        return (PathBuf::from(path), "SERVICE_CA_IMAGE");
    }
    let script = workspace_root().join("hack/image.sh");
    // Its progress (cargo's included) goes to the test's stderr, shown when the test fails.
    let output = Command::new("bash")
        .arg(&script)
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", script.display()));
    assert!(
        output.status.success(),
        "{} failed ({}); its output is above",
        script.display(),
        output.status
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let path = stdout
        .lines()
        .last()
        .map(|l| PathBuf::from(l.trim()))
        .unwrap_or_else(|| panic!("{} printed no path", script.display()));
    (path, "hack/image.sh")
}

/// The OCI layout directory: `image` itself, or the archive extracted into `dir`.
fn open_layout(image: &Path, dir: &Path) -> PathBuf {
    if image.is_dir() {
        return image.to_path_buf();
    }
    std::fs::create_dir_all(dir).expect("layout dir");
    run(Command::new("tar").arg("-xf").arg(image).arg("-C").arg(dir));
    dir.to_path_buf()
}

/// Reads the image named `reference` from the layout, checks every blob, extracts its layers in
/// order into `rootfs`, and returns its config.
fn unpack(layout: &Path, reference: &str, rootfs: &Path, scratch: &Path) -> Value {
    let oci_layout = read_json(&layout.join("oci-layout"));
    assert_eq!(
        oci_layout["imageLayoutVersion"], "1.0.0",
        "not an OCI image layout"
    );
    let index = read_json(&layout.join("index.json"));
    assert_eq!(index["schemaVersion"], 2, "index.json schemaVersion");
    let named: Vec<&Value> = index["manifests"]
        .as_array()
        .expect("index.json has manifests")
        .iter()
        .filter(|m| m["annotations"][REF_NAME] == reference)
        .collect();
    let [descriptor] = named[..] else {
        panic!(
            "index.json names {reference} {} times: {index}",
            named.len()
        )
    };
    assert_eq!(
        descriptor["mediaType"], MANIFEST_TYPE,
        "manifest media type"
    );
    let manifest: Value =
        serde_json::from_slice(&read_blob(layout, descriptor)).expect("the manifest parses");
    assert_eq!(
        manifest["config"]["mediaType"], CONFIG_TYPE,
        "config media type"
    );
    let config: Value =
        serde_json::from_slice(&read_blob(layout, &manifest["config"])).expect("the config parses");
    let layers = manifest["layers"].as_array().expect("manifest layers");
    let diff_ids = config["rootfs"]["diff_ids"]
        .as_array()
        .expect("config rootfs.diff_ids");
    assert_eq!(config["rootfs"]["type"], "layers", "rootfs type");
    assert!(!layers.is_empty(), "the image has no layers");
    assert_eq!(
        layers.len(),
        diff_ids.len(),
        "one diff_id per layer in the config"
    );
    for (i, (layer, diff_id)) in layers.iter().zip(diff_ids).enumerate() {
        let blob = blob_path(layout, layer);
        let _ = read_blob(layout, layer);
        let tar = scratch.join(format!("layer-{i}.tar"));
        match layer["mediaType"].as_str() {
            Some(LAYER_TYPE_GZIP) => {
                let out = std::fs::File::create(&tar).expect("layer tar");
                run(Command::new("gzip").arg("-dc").arg(&blob).stdout(out));
            }
            Some(LAYER_TYPE_TAR) => {
                std::fs::copy(&blob, &tar).expect("copy the layer");
            }
            other => panic!("layer {i}: unsupported media type {other:?}"),
        }
        assert_eq!(
            Some(format!("sha256:{}", sha256(&tar)).as_str()),
            diff_id.as_str(),
            "layer {i}: the uncompressed digest is not the config's diff_id"
        );
        let listing = run(Command::new("tar").arg("-tf").arg(&tar));
        for name in String::from_utf8_lossy(&listing).lines() {
            let base = name.trim_end_matches('/').rsplit('/').next().unwrap_or("");
            assert!(
                !name.starts_with('/') && !name.split('/').any(|c| c == ".."),
                "layer {i}: entry {name:?} escapes the root filesystem"
            );
            // Whiteouts delete what lower layers added; a single-layer image has none, and this
            // test does not implement them.
            assert!(
                !base.starts_with(".wh."),
                "layer {i}: whiteout {name:?} (not supported by this test)"
            );
        }
        run(Command::new("tar")
            .args(["-xpf"])
            .arg(&tar)
            .arg("-C")
            .arg(rootfs)
            .arg("--numeric-owner"));
    }
    config
}

/// The blob a descriptor names, checked against its size and digest.
fn read_blob(layout: &Path, descriptor: &Value) -> Vec<u8> {
    let path = blob_path(layout, descriptor);
    let body = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(
        Some(body.len() as u64),
        descriptor["size"].as_u64(),
        "size of {}",
        path.display()
    );
    assert_eq!(
        descriptor["digest"].as_str(),
        Some(format!("sha256:{}", sha256(&path)).as_str()),
        "digest of {}",
        path.display()
    );
    body
}

fn blob_path(layout: &Path, descriptor: &Value) -> PathBuf {
    let digest = descriptor["digest"].as_str().expect("a digest");
    let hex = digest
        .strip_prefix("sha256:")
        .unwrap_or_else(|| panic!("{digest}: not a sha256 digest"));
    assert!(
        hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()),
        "{digest}: malformed"
    );
    layout.join("blobs/sha256").join(hex)
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The hex SHA-256 of a file (coreutils' sha256sum: no hashing crate just for this test).
fn sha256(path: &Path) -> String {
    let out = run(Command::new("sha256sum").arg(path));
    String::from_utf8_lossy(&out)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Runs a command to completion; its stdout, or the test fails with its stderr.
fn run(command: &mut Command) -> Vec<u8> {
    let what = format!("{command:?}");
    let output = command
        .stderr(Stdio::piped())
        .output()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        output.status.success(),
        "{what}: {}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// `path` (absolute, inside the image) on this machine, following the image's own symbolic links
/// within `rootfs` (a container runtime resolves mount points the same way).
fn inside(rootfs: &Path, path: &Path) -> PathBuf {
    let mut resolved = rootfs.to_path_buf();
    for component in path.components().skip(1) {
        let next = resolved.join(component);
        match std::fs::read_link(&next) {
            Ok(target) if target.is_absolute() => {
                resolved = inside(rootfs, &target);
            }
            Ok(target) => {
                resolved = resolved.join(target);
            }
            Err(_) => resolved = next,
        }
    }
    assert!(
        resolved
            .canonicalize()
            .map(|p| p.starts_with(rootfs))
            .unwrap_or(true),
        "{} leaves the root filesystem",
        path.display()
    );
    resolved
}

/// The home directory of `uid` in the image's /etc/passwd (a runtime sets HOME from it).
fn passwd_home(rootfs: &Path, uid: u32) -> String {
    let passwd = std::fs::read_to_string(rootfs.join("etc/passwd"))
        .expect("the image has /etc/passwd (the runtime reads the user's home from it)");
    passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() == 7 && f[2] == uid.to_string())
        .map(|f| f[5].to_string())
        .unwrap_or_else(|| panic!("/etc/passwd of the image has no user {uid}:\n{passwd}"))
}

/// How the process gets the image's root filesystem, read-only, without touching this machine.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Sandbox {
    /// Root: a private mount namespace, `chroot --userspec` to the image's user.
    Root,
    /// Not root: a user namespace mapping the caller to root, with a private mount namespace;
    /// the image's user does not exist there, so the process runs as the mapped root.
    UserNamespace,
}

impl Sandbox {
    /// Bind-mounts the rootfs onto itself read-only inside the private mount namespace, then
    /// chroots into it (as `$1`, when set) and execs the rest.
    /// The host's tools are looked up on a fixed PATH: the environment is the image's, whose
    /// PATH (if any) need not contain the host's sbin directories.
    const SCRIPT: &'static str = r#"root="$0"; user="$1"; shift
host_path=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
mount=$(PATH=$host_path command -v mount) && chroot=$(PATH=$host_path command -v chroot) || exit 96
"$mount" --bind "$root" "$root" && "$mount" -o remount,bind,ro "$root" || exit 97
if [ -n "$user" ]; then exec "$chroot" --userspec="$user" "$root" "$@"; fi
exec "$chroot" "$root" "$@""#;

    fn for_this_process() -> Self {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let euid = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            .unwrap_or_default();
        if euid == "0" {
            Self::Root
        } else {
            Self::UserNamespace
        }
    }

    fn command(
        self,
        rootfs: &Path,
        uid: u32,
        gid: u32,
        entrypoint: &[String],
        args: &[String],
    ) -> Command {
        let mut command = Command::new("unshare");
        let (flags, user): (&[&str], String) = match self {
            Self::Root => (
                &["--mount", "--propagation", "private"],
                format!("{uid}:{gid}"),
            ),
            Self::UserNamespace => (
                &[
                    "--user",
                    "--map-root-user",
                    "--mount",
                    "--propagation",
                    "private",
                ],
                String::new(),
            ),
        };
        command
            .args(flags)
            .args(["--", "sh", "-c", Self::SCRIPT])
            .arg(rootfs)
            .arg(user)
            .args(entrypoint)
            .args(args);
        command
    }

    /// The running process is the image's binary, inside the root filesystem, as the image's
    /// user (as root).
    fn check_process(self, pid: u32, uid: u32, binary: &Path) {
        let proc = PathBuf::from(format!("/proc/{pid}"));
        let exe = std::fs::read_link(proc.join("exe")).expect("/proc/<pid>/exe");
        assert!(
            exe.ends_with(binary.file_name().expect("a file name")),
            "the process runs {}, not the image's binary",
            exe.display()
        );
        let root = std::fs::read_link(proc.join("root")).expect("/proc/<pid>/root");
        assert_ne!(root, Path::new("/"), "the process is not chrooted");
        if self == Self::Root {
            let status = std::fs::read_to_string(proc.join("status")).expect("/proc/<pid>/status");
            let real_uid = status
                .lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().next())
                .unwrap_or_default();
            assert_eq!(real_uid, uid.to_string(), "the process's uid");
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Self::Root => "chroot --userspec into the read-only root filesystem",
            Self::UserNamespace => {
                "unshare --user, chroot into the read-only root filesystem as the mapped root"
            }
        }
    }
}
