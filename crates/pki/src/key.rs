//! Key algorithms, key generation and the ahead-of-demand key pool.

use std::fmt;

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use zeroize::Zeroizing;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_P384_SHA384_ASN1_SIGNING, EcdsaKeyPair,
};

use crate::PkiError;

/// Key algorithm for CA and leaf keys (docs/behavior.md §5.1, §5.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum KeyAlgorithm {
    /// RSA 2048-bit, e=65537, sha256WithRSAEncryption (upstream default).
    #[default]
    Rsa2048,
    /// RSA 3072-bit.
    Rsa3072,
    /// RSA 4096-bit.
    Rsa4096,
    /// ECDSA on P-256 with SHA-256.
    EcdsaP256,
    /// ECDSA on P-384 with SHA-384.
    EcdsaP384,
}

impl KeyAlgorithm {
    /// All supported algorithms.
    pub const ALL: [KeyAlgorithm; 5] = [
        KeyAlgorithm::Rsa2048,
        KeyAlgorithm::Rsa3072,
        KeyAlgorithm::Rsa4096,
        KeyAlgorithm::EcdsaP256,
        KeyAlgorithm::EcdsaP384,
    ];

    /// Stable configuration name, e.g. `rsa-2048`.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyAlgorithm::Rsa2048 => "rsa-2048",
            KeyAlgorithm::Rsa3072 => "rsa-3072",
            KeyAlgorithm::Rsa4096 => "rsa-4096",
            KeyAlgorithm::EcdsaP256 => "ecdsa-p256",
            KeyAlgorithm::EcdsaP384 => "ecdsa-p384",
        }
    }

    /// True for the RSA variants.
    pub fn is_rsa(self) -> bool {
        matches!(
            self,
            KeyAlgorithm::Rsa2048 | KeyAlgorithm::Rsa3072 | KeyAlgorithm::Rsa4096
        )
    }

    pub(crate) fn rcgen_alg(self) -> &'static rcgen::SignatureAlgorithm {
        match self {
            KeyAlgorithm::Rsa2048 | KeyAlgorithm::Rsa3072 | KeyAlgorithm::Rsa4096 => {
                &rcgen::PKCS_RSA_SHA256
            }
            KeyAlgorithm::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            KeyAlgorithm::EcdsaP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
        }
    }
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for KeyAlgorithm {
    type Err = PkiError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        KeyAlgorithm::ALL
            .into_iter()
            .find(|a| a.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| PkiError::UnknownKeyAlgorithm(s.to_string()))
    }
}

/// A private key with its PEM form (PKCS#1 for RSA, SEC1 for EC, or the original bytes when adopted).
pub struct PrivateKey {
    alg: KeyAlgorithm,
    pem: Zeroizing<String>,
    pub(crate) pair: rcgen::KeyPair,
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateKey")
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl PrivateKey {
    /// The key's algorithm.
    pub fn algorithm(&self) -> KeyAlgorithm {
        self.alg
    }

    /// PEM text: `RSA PRIVATE KEY` (PKCS#1) or `EC PRIVATE KEY` (SEC1) for generated keys.
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// Raw public key (RSAPublicKey DER for RSA, uncompressed point for EC).
    pub fn public_key_raw(&self) -> &[u8] {
        self.pair.public_key_raw()
    }

    /// Parse a PEM private key (PKCS#1, PKCS#8 or SEC1), keeping the original PEM text.
    pub fn from_pem(pem_text: &str) -> Result<Self, PkiError> {
        let parsed = pem::parse(pem_text).map_err(|e| PkiError::InvalidKey(e.to_string()))?;
        if !parsed.tag().ends_with("PRIVATE KEY") {
            return Err(PkiError::InvalidKey(format!(
                "unexpected PEM block {:?}",
                parsed.tag()
            )));
        }
        let candidates = [
            KeyAlgorithm::Rsa2048,
            KeyAlgorithm::EcdsaP256,
            KeyAlgorithm::EcdsaP384,
        ];
        for alg in candidates {
            if let Ok(pair) = rcgen::KeyPair::from_pem_and_sign_algo(pem_text, alg.rcgen_alg()) {
                let alg = if alg.is_rsa() {
                    rsa_alg_for_bits(&pair)
                } else {
                    alg
                };
                return Ok(PrivateKey {
                    alg,
                    pem: Zeroizing::new(pem_text.to_string()),
                    pair,
                });
            }
        }
        Err(PkiError::InvalidKey(format!(
            "{} block is not an RSA, P-256 or P-384 key usable for signing",
            parsed.tag()
        )))
    }
}

fn rsa_alg_for_bits(pair: &rcgen::KeyPair) -> KeyAlgorithm {
    // RSAPublicKey DER length grows with the modulus; pick the nearest size label.
    match pair.public_key_raw().len() {
        0..=300 => KeyAlgorithm::Rsa2048,
        301..=430 => KeyAlgorithm::Rsa3072,
        _ => KeyAlgorithm::Rsa4096,
    }
}

fn pem_encode(tag: &str, der: Vec<u8>) -> String {
    pem::encode_config(
        &pem::Pem::new(tag, der),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

/// Generate a fresh key: RSA (e = 65537) with the `rsa` crate, ECDSA with aws-lc-rs.
///
/// RSA generation uses the pure-Rust `rsa` crate because it is the fastest generator without a
/// second C crypto library (docs/decisions.md "Key generation backend": 46 ms against aws-lc-rs's
/// 61 ms CPU mean for RSA-2048). Signing stays on aws-lc-rs: the key is handed to rcgen as PKCS#1,
/// which aws-lc-rs parses and validates like any key read from a Secret.
pub fn generate_key(alg: KeyAlgorithm) -> Result<PrivateKey, PkiError> {
    let gen_err = |e: aws_lc_rs::error::Unspecified| PkiError::KeyGeneration(e.to_string());
    let pem_text = match alg {
        KeyAlgorithm::Rsa2048 | KeyAlgorithm::Rsa3072 | KeyAlgorithm::Rsa4096 => {
            use rsa::pkcs1::EncodeRsaPrivateKey;
            let bits = match alg {
                KeyAlgorithm::Rsa3072 => 3072,
                KeyAlgorithm::Rsa4096 => 4096,
                _ => 2048,
            };
            // The kernel's CSPRNG directly (getrandom), no user-space generator to seed or fork.
            let key = rsa::PrivateKey::new(&mut rand::rngs::SysRng, bits)
                .map_err(|e| PkiError::KeyGeneration(e.to_string()))?;
            let pkcs1 = key
                .to_pkcs1_der()
                .map_err(|e| PkiError::KeyGeneration(e.to_string()))?;
            pem_encode("RSA PRIVATE KEY", pkcs1.as_bytes().to_vec())
        }
        KeyAlgorithm::EcdsaP256 | KeyAlgorithm::EcdsaP384 => {
            let sig_alg = if alg == KeyAlgorithm::EcdsaP256 {
                &ECDSA_P256_SHA256_ASN1_SIGNING
            } else {
                &ECDSA_P384_SHA384_ASN1_SIGNING
            };
            let kp = EcdsaKeyPair::generate(sig_alg).map_err(gen_err)?;
            let sec1: aws_lc_rs::encoding::EcPrivateKeyRfc5915Der<'static> =
                kp.private_key().as_der().map_err(gen_err)?;
            pem_encode("EC PRIVATE KEY", sec1.as_ref().to_vec())
        }
    };
    let pair = rcgen::KeyPair::from_pem_and_sign_algo(&pem_text, alg.rcgen_alg())
        .map_err(|e| PkiError::KeyGeneration(e.to_string()))?;
    Ok(PrivateKey {
        alg,
        pem: Zeroizing::new(pem_text),
        pair,
    })
}

/// Keys generated ahead of demand by background std threads into a bounded channel.
///
/// The depth (`capacity`) absorbs bursts: that many keys are handed out without waiting. The
/// generator threads refill it at low priority ([`KEY_POOL_NICE`]) and block, without polling,
/// while it is full.
pub struct KeyPool {
    alg: KeyAlgorithm,
    rx: Option<Mutex<Receiver<Result<PrivateKey, PkiError>>>>,
    stop: Arc<AtomicBool>,
    live: Arc<AtomicUsize>,
    workers: Vec<JoinHandle<()>>,
}

impl fmt::Debug for KeyPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyPool")
            .field("alg", &self.alg)
            .field("workers", &self.workers.len())
            .finish_non_exhaustive()
    }
}

/// Nice value of the pool's generator threads (Linux): refills run at low priority, so on a busy
/// machine they yield the CPU to reconciles and the rest of the process (a nice-10 thread gets about
/// a tenth of the share of a nice-0 one under contention, all of an otherwise idle CPU).
pub(crate) const KEY_POOL_NICE: i32 = 10;

/// Lower the calling thread's scheduling priority to [`KEY_POOL_NICE`]. On Linux the nice value
/// is per thread (`setpriority(PRIO_PROCESS, tid)` changes that thread only), so the runtime's
/// threads keep theirs. Never raises it: a process started with a higher nice keeps it. A failure
/// only means the thread keeps its priority, so it is ignored.
#[cfg(target_os = "linux")]
fn lower_thread_priority() {
    // SAFETY: gettid, getpriority and setpriority take plain integers and only affect the
    // calling thread here; no memory is shared with the kernel.
    unsafe {
        let tid = libc::gettid() as libc::id_t;
        // -1 is also the error value; an error (impossible for our own tid) then means "lower it".
        if libc::getpriority(libc::PRIO_PROCESS, tid) < KEY_POOL_NICE {
            libc::setpriority(libc::PRIO_PROCESS, tid, KEY_POOL_NICE);
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_thread_priority() {}

/// Generates keys until the pool is dropped, at low priority. A full pool parks the thread in
/// `send` (no polling): an idle, full pool costs no CPU.
fn worker(alg: KeyAlgorithm, tx: SyncSender<Result<PrivateKey, PkiError>>, stop: Arc<AtomicBool>) {
    lower_thread_priority();
    while !stop.load(Ordering::Relaxed) {
        if tx.send(generate_key(alg)).is_err() {
            return; // the pool was dropped
        }
    }
}

impl KeyPool {
    /// Start `threads` (at least 1) generator threads filling a channel of `capacity` (at least 1) keys.
    pub fn new(alg: KeyAlgorithm, capacity: usize, threads: usize) -> Self {
        let (tx, rx) = sync_channel(capacity.max(1));
        let stop = Arc::new(AtomicBool::new(false));
        let live = Arc::new(AtomicUsize::new(0));
        let workers = (0..threads.max(1))
            .filter_map(|i| {
                let tx = tx.clone();
                let stop = stop.clone();
                let live_w = live.clone();
                live.fetch_add(1, Ordering::SeqCst);
                let spawned = std::thread::Builder::new()
                    .name(format!("keypool-{alg}-{i}"))
                    .spawn(move || {
                        worker(alg, tx, stop);
                        live_w.fetch_sub(1, Ordering::SeqCst);
                    });
                match spawned {
                    Ok(h) => Some(h),
                    Err(_) => {
                        live.fetch_sub(1, Ordering::SeqCst);
                        None
                    }
                }
            })
            .collect();
        KeyPool {
            alg,
            rx: Some(Mutex::new(rx)),
            stop,
            live,
            workers,
        }
    }

    /// Algorithm of the keys in this pool.
    pub fn algorithm(&self) -> KeyAlgorithm {
        self.alg
    }

    /// Take a key, blocking until one is available.
    pub fn take(&self) -> Result<PrivateKey, PkiError> {
        let rx = self.rx.as_ref().ok_or(PkiError::PoolClosed)?;
        let guard = rx.lock().map_err(|_| PkiError::PoolClosed)?;
        guard.recv().map_err(|_| PkiError::PoolClosed)?
    }

    /// Take a key if one is ready now; falls back to `None` (caller may then call `generate_key`).
    pub fn try_take(&self) -> Option<PrivateKey> {
        let rx = self.rx.as_ref()?;
        let guard = rx.lock().ok()?;
        match guard.try_recv() {
            Ok(Ok(k)) => Some(k),
            Ok(Err(_)) | Err(TryRecvError::Empty) | Err(TryRecvError::Disconnected) => None,
        }
    }

    /// Shared counter of worker threads still running (observability and tests).
    pub fn live_threads_counter(&self) -> Arc<AtomicUsize> {
        self.live.clone()
    }
}

impl Drop for KeyPool {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.rx.take();
        for h in self.workers.drain(..) {
            let _ = h.join();
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::time::{Duration, Instant};

    /// Thread ids of this process.
    fn tasks() -> HashSet<String> {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }

    /// (state, nice, user+system CPU ticks, voluntary+involuntary context switches) of a thread.
    fn sample(tid: &str) -> (char, i64, u64, u64) {
        let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap();
        // Fields after the parenthesised name: state is field 3, utime 14, stime 15, nice 19.
        let f: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
        let num = |i: usize| f[i - 3].parse::<i64>().unwrap();
        let status = std::fs::read_to_string(format!("/proc/self/task/{tid}/status")).unwrap();
        let switches = status
            .lines()
            .filter(|l| l.contains("ctxt_switches:"))
            .map(|l| l.split_whitespace().last().unwrap().parse::<u64>().unwrap())
            .sum();
        let state = f[0].chars().next().unwrap();
        (state, num(19), (num(14) + num(15)) as u64, switches)
    }

    #[test]
    fn full_pool_sleeps_at_low_priority() {
        let before = tasks();
        let pool = KeyPool::new(KeyAlgorithm::EcdsaP256, 4, 2);
        // P-256 keys take ~0.03 ms: the pool is full almost at once. Wait (bounded) until both
        // generator threads are asleep; a poll loop here is the test's, not the pool's.
        let deadline = Instant::now() + Duration::from_secs(30);
        let workers = loop {
            let workers: Vec<String> = tasks()
                .difference(&before)
                .filter(|t| {
                    std::fs::read_to_string(format!("/proc/self/task/{t}/comm"))
                        .is_ok_and(|c| c.starts_with("keypool-"))
                })
                .cloned()
                .collect();
            if workers.len() == 2 && workers.iter().all(|t| sample(t).0 == 'S') {
                break workers;
            }
            assert!(
                Instant::now() < deadline,
                "generator threads never went to sleep: {workers:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        // Low priority, never above the test process's own nice value.
        let own = sample(&unsafe { libc::gettid() }.to_string()).1;
        for t in &workers {
            assert_eq!(
                sample(t).1,
                own.max(i64::from(KEY_POOL_NICE)),
                "nice of thread {t}"
            );
        }
        // A full pool costs nothing: over a second the sleeping threads use no CPU tick (10 ms
        // each) and are not woken. The old 5 ms poll woke 200 times a second. Bounds are generous
        // (the last key of a not-quite-full pool may still land in the window): ticks and wake-ups
        // are counted by the kernel, not timed by the test.
        let start: Vec<_> = workers.iter().map(|t| sample(t)).collect();
        std::thread::sleep(Duration::from_secs(1));
        for (t, s0) in workers.iter().zip(start) {
            let s1 = sample(t);
            assert!(
                s1.2 - s0.2 <= 2,
                "thread {t} used {} CPU ticks while full",
                s1.2 - s0.2
            );
            assert!(
                s1.3 - s0.3 <= 3,
                "thread {t} woke {} times while full",
                s1.3 - s0.3
            );
        }
        // Still a working pool.
        assert_eq!(pool.take().unwrap().algorithm(), KeyAlgorithm::EcdsaP256);
    }
}
