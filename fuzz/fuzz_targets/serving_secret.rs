//! A Service's serving Secret (data, annotations, labels) and the Service's annotations, through
//! the serving decision, against a fixed CA (fuzz/fixtures/serving-ca).
#![no_main]

use std::sync::LazyLock;

use service_ca_controller::fuzzing;
use service_ca_pki::SigningCa;

static CA: LazyLock<SigningCa> = LazyLock::new(|| {
    fuzzing::serving_ca(include_bytes!("../fixtures/serving-ca"))
        .expect("fuzz/fixtures/serving-ca holds a usable CA")
});

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzzing::serving_secret(&CA, data));
