//! The `--config` settings file. The binary crate has no library: its parser and the target's
//! body are compiled here from their source files.
#![no_main]

#[allow(dead_code, unreachable_pub)]
#[path = "../../crates/service-ca/src/settings.rs"]
mod settings;

#[path = "../../crates/service-ca/src/fuzzing.rs"]
mod fuzzing;

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzzing::config_file(data));
