//! RSA key generation backends side by side (issue 15; docs/decisions.md "Key generation backend").
//!
//! Not criterion: RSA key generation time is a wide distribution (prime search), and what matters
//! for bulk issuance is the mean over many keys, so every key is timed and mean, median and p90 are
//! printed. Single thread. The backends are interleaved key by key (round robin), so load from
//! anything else on a shared machine falls on all of them alike instead of on whichever ran last.
//!
//! Two clocks per key: wall time, and the thread's own CPU time (`CLOCK_THREAD_CPUTIME_ID`), which
//! other processes on a shared machine inflate far less (they still cost it cache and SMT
//! sharing): compare backends on CPU time when the machine was busy.
//!
//! Every key is checked outside the timed region: loaded by aws-lc-rs from its PKCS#8 bytes (the
//! signing stack's own validation), modulus of exactly the requested bits, public exponent 65537.
//!
//! Environment: `KEYGEN_COUNT` keys per backend for RSA-2048 (default 200), `KEYGEN_COUNT_3072`
//! for RSA-3072 (default 200), `KEYGEN_SIZES` (default `2048,3072`).
//! Candidates: aws-lc-rs, the `rsa` crate (pure Rust), and with feature `bench-openssl` OpenSSL
//! built from vendored sources; plus `generate_key`, the product's path (backend + PKCS#1 PEM +
//! loading into rcgen for signing).

use std::hint::black_box;
use std::time::{Duration, Instant};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::KeyPair as _;
use rsa::pkcs8::EncodePrivateKey;
use service_ca_pki::KeyAlgorithm;

/// One candidate: generates an RSA key of `bits` and returns it as PKCS#8 DER.
struct Backend {
    name: String,
    generate: fn(usize) -> Vec<u8>,
}

fn aws_lc(bits: usize) -> Vec<u8> {
    let size = match bits {
        2048 => aws_lc_rs::rsa::KeySize::Rsa2048,
        3072 => aws_lc_rs::rsa::KeySize::Rsa3072,
        4096 => aws_lc_rs::rsa::KeySize::Rsa4096,
        _ => panic!("aws-lc-rs: unsupported size {bits}"),
    };
    let kp = aws_lc_rs::rsa::KeyPair::generate(size).expect("aws-lc-rs keygen");
    let der: aws_lc_rs::encoding::Pkcs8V1Der<'static> = kp.as_der().expect("aws-lc-rs PKCS#8");
    der.as_ref().to_vec()
}

fn rust_rsa(bits: usize) -> Vec<u8> {
    let key = rsa::PrivateKey::new(&mut rand::rngs::SysRng, bits).expect("rsa keygen");
    key.to_pkcs8_der().expect("rsa PKCS#8").as_bytes().to_vec()
}

#[cfg(feature = "bench-openssl")]
fn openssl_vendored(bits: usize) -> Vec<u8> {
    let rsa = openssl::rsa::Rsa::generate(bits as u32).expect("openssl keygen");
    let pkey = openssl::pkey::PKey::from_rsa(rsa).expect("openssl pkey");
    pkey.private_key_to_pkcs8().expect("openssl PKCS#8")
}

/// The product path: `generate_key` as the pool and the CA call it (PEM out, loaded for signing).
fn product(bits: usize) -> Vec<u8> {
    let alg = match bits {
        2048 => KeyAlgorithm::Rsa2048,
        3072 => KeyAlgorithm::Rsa3072,
        4096 => KeyAlgorithm::Rsa4096,
        _ => panic!("generate_key: unsupported size {bits}"),
    };
    let key = service_ca_pki::generate_key(alg).expect("generate_key");
    let pem = pem::parse(key.pem()).expect("generate_key PEM");
    match pem.tag() {
        "PRIVATE KEY" => pem.contents().to_vec(),
        // PKCS#1 inside: wrap it as PKCS#8 (rsaEncryption, NULL parameters) for the check.
        "RSA PRIVATE KEY" => pkcs1_to_pkcs8(pem.contents()),
        other => panic!("generate_key: unexpected PEM block {other}"),
    }
}

fn der_len(len: usize) -> Vec<u8> {
    match len {
        0..=0x7f => vec![len as u8],
        0x80..=0xff => vec![0x81, len as u8],
        _ => vec![0x82, (len >> 8) as u8, len as u8],
    }
}

fn pkcs1_to_pkcs8(pkcs1: &[u8]) -> Vec<u8> {
    // version 0, AlgorithmIdentifier { rsaEncryption, NULL }
    let mut body = vec![0x02, 0x01, 0x00];
    body.extend_from_slice(&[
        0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
    ]);
    body.push(0x04);
    body.extend(der_len(pkcs1.len()));
    body.extend_from_slice(pkcs1);
    let mut out = vec![0x30];
    out.extend(der_len(body.len()));
    out.extend(body);
    out
}

/// Validity of one generated key: aws-lc-rs accepts it (its RSA_check_key), exact modulus size,
/// e = 65537.
fn check(name: &str, bits: usize, pkcs8: &[u8]) {
    let kp = aws_lc_rs::rsa::KeyPair::from_pkcs8(pkcs8)
        .unwrap_or_else(|e| panic!("{name}: key rejected by aws-lc-rs: {e}"));
    assert_eq!(kp.public_modulus_len() * 8, bits, "{name}: modulus bytes");
    let public = aws_lc_rs::rsa::PublicKeyComponents::<Vec<u8>>::from(kp.public_key());
    let top = public.n.iter().position(|b| *b != 0).unwrap_or(0);
    let n = &public.n[top..];
    assert_eq!(
        n.len() * 8 - n[0].leading_zeros() as usize,
        bits,
        "{name}: modulus bits"
    );
    let top = public.e.iter().position(|b| *b != 0).unwrap_or(0);
    assert_eq!(&public.e[top..], &[0x01, 0x00, 0x01], "{name}: e != 65537");
}

/// CPU time used by the calling thread so far.
#[cfg(target_os = "linux")]
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec we own.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Elsewhere: no thread CPU clock; the CPU columns then repeat wall time.
#[cfg(not(target_os = "linux"))]
fn thread_cpu() -> Duration {
    Instant::now().duration_since(*START.get_or_init(Instant::now))
}

#[cfg(not(target_os = "linux"))]
static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

struct Stats {
    mean: Duration,
    median: Duration,
    p90: Duration,
    max: Duration,
}

fn stats(mut v: Vec<Duration>) -> Stats {
    v.sort();
    let n = v.len();
    let at = |q: f64| v[((n as f64 * q).ceil() as usize).clamp(1, n) - 1];
    Stats {
        mean: v.iter().sum::<Duration>() / n as u32,
        median: if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2
        },
        p90: at(0.9),
        max: v[n - 1],
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e3)
}

fn env_usize(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?}: not a number")),
        Err(_) => default,
    }
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this with no such flag: then
    // one key per backend and size is enough to prove the bench works.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let mut backends = vec![
        Backend {
            name: "aws-lc-rs".into(),
            generate: aws_lc,
        },
        Backend {
            name: "rsa crate 0.10 (pure Rust)".into(),
            generate: rust_rsa,
        },
    ];
    #[cfg(feature = "bench-openssl")]
    backends.push(Backend {
        name: format!("openssl, vendored {}", openssl::version::version()),
        generate: openssl_vendored,
    });
    backends.push(Backend {
        name: "generate_key (product path)".into(),
        generate: product,
    });
    if cfg!(not(feature = "bench-openssl")) {
        println!(
            "(OpenSSL not measured: build with --features bench-openssl, as `make bench` does)"
        );
    }

    let sizes: Vec<usize> = std::env::var("KEYGEN_SIZES")
        .unwrap_or_else(|_| "2048,3072".into())
        .split(',')
        .map(|s| {
            s.trim()
                .parse()
                .expect("KEYGEN_SIZES: comma-separated bit sizes")
        })
        .collect();
    for bits in sizes {
        let count = match (smoke, bits) {
            (true, _) => 1,
            (false, 2048) => env_usize("KEYGEN_COUNT", 200),
            (false, _) => env_usize("KEYGEN_COUNT_3072", 200),
        };
        // Warm-up: first calls pay for lazy initialisation (self tests, tables).
        for b in &backends {
            for _ in 0..if smoke { 0 } else { 2 } {
                black_box((b.generate)(bits));
            }
        }
        let mut wall: Vec<Vec<Duration>> = vec![Vec::with_capacity(count); backends.len()];
        let mut cpu: Vec<Vec<Duration>> = vec![Vec::with_capacity(count); backends.len()];
        let started = Instant::now();
        for _ in 0..count {
            for (i, b) in backends.iter().enumerate() {
                let (t0, c0) = (Instant::now(), thread_cpu());
                let key = black_box((b.generate)(bits));
                cpu[i].push(thread_cpu() - c0);
                wall[i].push(t0.elapsed());
                check(&b.name, bits, &key);
            }
        }
        println!(
            "\nRSA-{bits}: {count} keys per backend, single thread, interleaved ({:.0} s)",
            started.elapsed().as_secs_f64()
        );
        println!(
            "| backend | mean ms | median ms | p90 ms | max ms | CPU mean ms | CPU median ms | CPU p90 ms |"
        );
        println!("|---|---:|---:|---:|---:|---:|---:|---:|");
        for ((b, w), c) in backends.iter().zip(wall).zip(cpu) {
            let (w, c) = (stats(w), stats(c));
            println!(
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                b.name,
                ms(w.mean),
                ms(w.median),
                ms(w.p90),
                ms(w.max),
                ms(c.mean),
                ms(c.median),
                ms(c.p90),
            );
        }
    }
}
