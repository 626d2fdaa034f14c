//! PEM bundles as found in `tls.crt`, `ca-bundle.crt` and injected bundles.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| service_ca_pki::fuzzing::pem_bundle(data));
