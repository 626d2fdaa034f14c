//! Entry point of the fuzz target `config_file` (docs/reliability.md, "Fuzzing").
//!
//! The binary has no library, so `fuzz/fuzz_targets/config_file.rs` compiles this file and
//! `settings.rs` itself (`#[path]`); the test below replays the committed corpus through the same
//! function.

use crate::settings::{Settings, parse_duration, show_duration};

/// Target `config_file`: the text of a `--config` file. Parsing and validation must refuse bad
/// input with an error, and every duration must show as text that parses back to itself (the
/// help text shows the defaults that way).
pub fn config_file(data: &[u8]) {
    // `Settings::from_file` reads the file as UTF-8 text.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(settings) = Settings::from_text(text) else {
        return;
    };
    let durations = [
        settings.ca_lifetime,
        settings.rotation_threshold,
        settings.trust_bridge_min,
        settings.leaf_lifetime,
        settings.renew_before,
    ];
    for d in durations.into_iter().flatten() {
        assert_eq!(parse_duration(&show_duration(d)), Ok(d));
    }
    if let Ok(cfg) = settings.to_config() {
        assert!(cfg.validate().is_ok());
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn config_file_corpus() {
        let ran = service_ca_pki::fuzzing::run_corpus("config_file", super::config_file)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(ran > 0);
    }
}
