//! libFuzzer entry of the `safetensors-header` target (`phi3_fuzz::targets`): `cargo fuzz run safetensors-header`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| phi3_fuzz::fuzz_one(
    phi3_fuzz::Target::SafetensorsHeader,
    data
));
