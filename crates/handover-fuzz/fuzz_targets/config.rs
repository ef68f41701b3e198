//! Configuration files: any TOML text is a configuration or a `ConfigError` naming a key,
//! never a panic, and the error never repeats a secret given in the file.
#![no_main]

use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use handover_app::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Ok(text) = std::str::from_utf8(input) else {
        return;
    };
    let figment = Figment::from(Serialized::defaults(Config::default())).merge(Toml::string(text));
    match Config::from_figment(figment) {
        Ok(config) => {
            let _ = format!("{config:?}");
        }
        Err(error) => {
            let _ = error.to_string();
        }
    }
});
