//! The fuzz corpora of the PKI targets (`fuzz/corpus/<target>/`) replayed through the functions
//! the fuzz targets call (docs/reliability.md, "Fuzzing"), so that what the fuzzer once found
//! stays fixed.

use service_ca_pki::fuzzing::{self, run_corpus};

fn replay(target: &str, body: fn(&[u8])) {
    let ran = run_corpus(target, body).unwrap_or_else(|e| panic!("{target}: {e}"));
    assert!(ran > 0);
}

#[test]
fn pem_bundle_corpus() {
    replay("pem_bundle", fuzzing::pem_bundle);
}

#[test]
fn private_key_corpus() {
    replay("private_key", fuzzing::private_key);
}
