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
use crate::der::pkcs8_inner_key;

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

/// Generate a fresh key with aws-lc-rs (RSA e=65537 or ECDSA).
pub fn generate_key(alg: KeyAlgorithm) -> Result<PrivateKey, PkiError> {
    let gen_err = |e: aws_lc_rs::error::Unspecified| PkiError::KeyGeneration(e.to_string());
    let pem_text = match alg {
        KeyAlgorithm::Rsa2048 | KeyAlgorithm::Rsa3072 | KeyAlgorithm::Rsa4096 => {
            let size = match alg {
                KeyAlgorithm::Rsa3072 => aws_lc_rs::rsa::KeySize::Rsa3072,
                KeyAlgorithm::Rsa4096 => aws_lc_rs::rsa::KeySize::Rsa4096,
                _ => aws_lc_rs::rsa::KeySize::Rsa2048,
            };
            let kp = aws_lc_rs::rsa::KeyPair::generate(size).map_err(gen_err)?;
            let pkcs8: aws_lc_rs::encoding::Pkcs8V1Der<'static> = kp.as_der().map_err(gen_err)?;
            let pkcs1 = pkcs8_inner_key(pkcs8.as_ref())?;
            pem_encode("RSA PRIVATE KEY", pkcs1)
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

/// Generates keys until the pool is dropped. A full pool parks the thread in `send` (no polling):
/// an idle, full pool costs no CPU.
fn worker(alg: KeyAlgorithm, tx: SyncSender<Result<PrivateKey, PkiError>>, stop: Arc<AtomicBool>) {
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
