//! Latency probe for `make bench` (hack/bench-scale.sh), run against a cluster where the
//! controller is already running:
//!
//! - `latency KUBECONFIG burst NAMESPACE N`: creates N annotated Services back to back and reports
//!   create-returned → Secret-seen-by-a-watch latencies (p50, p95, max).
//! - `latency KUBECONFIG configmap NAMESPACE N`: one annotated ConfigMap at a time, read back in a
//!   tight GET loop until the bundle is there; reports create-returned → bundle-readable latencies
//!   and how often the very first read already had it.
//!
//! Prints one line per scenario: `key=value` pairs, times in milliseconds.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use kube::Api;
use kube::api::{PartialObjectMeta, PostParams};
use kube::runtime::watcher::{self, Event};
use serde_json::json;

const SECRET_NAME: &str = "service.beta.openshift.io/serving-cert-secret-name";
const INJECT: &str = "service.beta.openshift.io/inject-cabundle";
const BUNDLE_KEY: &str = "service-ca.crt";
const DEADLINE: Duration = Duration::from_secs(600);

fn percentile(sorted_ms: &[f64], p: f64) -> f64 {
    if sorted_ms.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted_ms.len() as f64).ceil() as usize;
    sorted_ms[rank.clamp(1, sorted_ms.len()) - 1]
}

fn summary(mut ms: Vec<f64>) -> String {
    ms.sort_by(f64::total_cmp);
    format!(
        "n={} p50_ms={:.1} p95_ms={:.1} max_ms={:.1}",
        ms.len(),
        percentile(&ms, 50.0),
        percentile(&ms, 95.0),
        ms.last().copied().unwrap_or(f64::NAN)
    )
}

async fn burst(client: kube::Client, ns: &str, n: usize) -> Result<String, String> {
    let secrets: Api<PartialObjectMeta<Secret>> = Api::namespaced(client.clone(), ns);
    let services: Api<Service> = Api::namespaced(client, ns);
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
    let mut stream = watcher::watcher(secrets, watcher::Config::default()).boxed();
    // The watch must be established before the first create, or early Secrets look late.
    loop {
        match stream.next().await {
            Some(Ok(Event::InitDone)) => break,
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(format!("watch: {e}")),
            None => return Err("watch ended".into()),
        }
    }
    tokio::spawn(async move {
        while let Some(ev) = stream.next().await {
            if let Ok(Event::Apply(obj) | Event::InitApply(obj)) = ev
                && let Some(name) = obj.metadata.name
            {
                let _ = seen_tx.send((name, Instant::now()));
            }
        }
    });
    let mut created: HashMap<String, Instant> = HashMap::new();
    for i in 0..n {
        let svc: Service = serde_json::from_value(json!({
            "metadata": {"name": format!("burst-{i}"), "annotations": {SECRET_NAME: format!("burst-{i}-tls")}},
            "spec": {"ports": [{"port": 443}], "selector": {"app": format!("burst-{i}")}},
        }))
        .map_err(|e| e.to_string())?;
        services
            .create(&PostParams::default(), &svc)
            .await
            .map_err(|e| format!("create Service burst-{i}: {e}"))?;
        created.insert(format!("burst-{i}-tls"), Instant::now());
    }
    let mut latencies = Vec::with_capacity(n);
    let deadline = Instant::now() + DEADLINE;
    let mut seen: HashMap<String, Instant> = HashMap::new();
    while seen.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, seen_rx.recv()).await {
            Ok(Some((name, at))) => {
                if created.contains_key(&name) {
                    seen.entry(name).or_insert(at);
                }
            }
            Ok(None) | Err(_) => {
                return Err(format!("only {} of {n} Secrets appeared", seen.len()));
            }
        }
    }
    for (name, at) in &seen {
        // A Secret seen before its Service's create returned counts as 0 (the create's own
        // round trip was slower than the controller).
        latencies.push(at.saturating_duration_since(created[name]).as_secs_f64() * 1e3);
    }
    Ok(format!("burst {}", summary(latencies)))
}

async fn configmaps(client: kube::Client, ns: &str, n: usize) -> Result<String, String> {
    let cms: Api<ConfigMap> = Api::namespaced(client, ns);
    let mut latencies = Vec::with_capacity(n);
    let mut first_read_had_it = 0;
    let mut reads = 0usize;
    for i in 0..n {
        let name = format!("probe-{i}");
        let cm: ConfigMap = serde_json::from_value(json!({
            "metadata": {"name": name, "annotations": {INJECT: "true"}},
        }))
        .map_err(|e| e.to_string())?;
        cms.create(&PostParams::default(), &cm)
            .await
            .map_err(|e| format!("create ConfigMap {name}: {e}"))?;
        let created = Instant::now();
        let mut first = true;
        loop {
            let got = cms
                .get(&name)
                .await
                .map_err(|e| format!("get ConfigMap {name}: {e}"))?;
            reads += 1;
            if got
                .data
                .as_ref()
                .is_some_and(|d| d.contains_key(BUNDLE_KEY))
            {
                if first {
                    first_read_had_it += 1;
                }
                latencies.push(created.elapsed().as_secs_f64() * 1e3);
                break;
            }
            first = false;
            if created.elapsed() > DEADLINE {
                return Err(format!("ConfigMap {name} never got the bundle"));
            }
        }
    }
    Ok(format!(
        "configmap {} first_read_had_bundle={first_read_had_it}/{n} reads={reads}",
        summary(latencies)
    ))
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: latency KUBECONFIG (burst|configmap) NAMESPACE N";
    let (Some(kubeconfig), Some(scenario), Some(ns), Some(n)) = (
        args.get(1),
        args.get(2),
        args.get(3),
        args.get(4).and_then(|n| n.parse::<usize>().ok()),
    ) else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let client = match service_ca_testing::client_from_kubeconfig(Path::new(kubeconfig), None).await
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("latency: {e}");
            std::process::exit(1);
        }
    };
    let result = match scenario.as_str() {
        "burst" => burst(client, ns, n).await,
        "configmap" => configmaps(client, ns, n).await,
        _ => Err(usage.into()),
    };
    match result {
        Ok(line) => println!("{line}"),
        Err(e) => {
            eprintln!("latency: {e}");
            std::process::exit(1);
        }
    }
}
