//! Annotation values of Services, ConfigMaps and the CA Secret.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| service_ca_controller::fuzzing::annotations(data));
