//! Criterion benchmarks: key generation, signing, keygen+sign, KeyPool throughput.

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use service_ca_pki::*;
use time::OffsetDateTime;

fn req() -> ServingRequest<'static> {
    ServingRequest {
        service: "foo",
        namespace: "bar",
        uid: "0b7c2f5e-1d3a-4c8e-9f6a-2b1c3d4e5f60",
        headless: false,
        cluster_domain: "cluster.local",
        lifetime: DEFAULT_SERVING_LIFETIME,
        chain_order: ChainOrder::Portable,
        extra_dns_names: &[],
    }
}

fn benches(c: &mut Criterion) {
    let now = OffsetDateTime::now_utc();
    let algs = [
        KeyAlgorithm::Rsa2048,
        KeyAlgorithm::Rsa3072,
        KeyAlgorithm::EcdsaP256,
        KeyAlgorithm::EcdsaP384,
    ];
    let mut g = c.benchmark_group("keygen");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_millis(500));
    for alg in algs {
        g.bench_function(alg.as_str(), |b| b.iter(|| generate_key(alg).unwrap()));
    }
    g.finish();

    let mut g = c.benchmark_group("sign");
    g.sample_size(20)
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(300));
    for alg in [KeyAlgorithm::Rsa2048, KeyAlgorithm::EcdsaP256] {
        let ca = SigningCa::create(
            &CaConfig {
                key_algorithm: alg,
                ..CaConfig::default()
            },
            now,
        )
        .unwrap();
        g.bench_function(alg.as_str(), |b| {
            b.iter_batched(
                || generate_key(KeyAlgorithm::EcdsaP256).unwrap(),
                |k| issue_serving(&ca, &req(), k, now).unwrap(),
                criterion::BatchSize::SmallInput,
            )
        });
    }
    g.finish();

    let mut g = c.benchmark_group("keygen_sign");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_millis(500));
    for alg in [KeyAlgorithm::Rsa2048, KeyAlgorithm::EcdsaP256] {
        let ca = SigningCa::create(
            &CaConfig {
                key_algorithm: alg,
                ..CaConfig::default()
            },
            now,
        )
        .unwrap();
        g.bench_function(alg.as_str(), |b| {
            b.iter(|| issue_serving(&ca, &req(), generate_key(alg).unwrap(), now).unwrap())
        });
    }
    g.finish();

    let mut g = c.benchmark_group("keypool_2_threads");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(4))
        .warm_up_time(Duration::from_millis(500));
    let pool = KeyPool::new(KeyAlgorithm::Rsa2048, 16, 2);
    g.bench_function("rsa-2048_take", |b| b.iter(|| pool.take().unwrap()));
    g.finish();
}

criterion_group!(pki, benches);
criterion_main!(pki);
