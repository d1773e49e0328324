//! libFuzzer entry of the `reference` target (`phi3_fuzz::targets`): `cargo fuzz run reference`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| phi3_fuzz::fuzz_one(phi3_fuzz::Target::Reference, data));
