//! libFuzzer entry of the `index` target (`phi3_fuzz::targets`): `cargo fuzz run index`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| phi3_fuzz::fuzz_one(phi3_fuzz::Target::Index, data));
