//! PEM private keys as found in `tls.key`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| service_ca_pki::fuzzing::private_key(data));
