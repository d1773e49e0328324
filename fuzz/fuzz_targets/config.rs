//! libFuzzer entry of the `config` target (`phi3_fuzz::targets`): `cargo fuzz run config`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| phi3_fuzz::fuzz_one(phi3_fuzz::Target::Config, data));
