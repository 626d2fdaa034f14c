//! The CA Secret's data and annotations, through the CA manager's decision.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| service_ca_controller::fuzzing::ca_secret(data));
