//! The cxx bridge to the C++ shim (`src/shim.cc`), which calls tt-metal's packer.

#[cxx::bridge(namespace = "tt_oracle")]
pub(crate) mod bridge {
    unsafe extern "C++" {
        include!("tt-metal-oracle/src/shim.h");

        /// `convert_u32_to_bfp<format, truncate>(input, shared_exp, is_exp_a = false)`.
        fn u32_to_bfp(format: u8, input: u32, shared_exp: u32, truncate: bool) -> u8;

        /// `convert_bfp_to_u32(format, code, shared_exp, is_exp_a = false)`.
        fn bfp_to_u32(format: u8, code: u8, shared_exp: u8) -> u32;

        /// `pack_as_bfp{8,4}_tiles<float>(values, row_major_input = true, is_exp_a = false, nullopt)`.
        fn pack_tiles(format: u8, values: &[f32]) -> Result<Vec<u32>>;

        /// `unpack_bfp{8,4}_tiles_into_float_vec(words, row_major_output = true, false, nullopt)`.
        fn unpack_tiles(format: u8, words: &[u32]) -> Result<Vec<f32>>;
    }
}
