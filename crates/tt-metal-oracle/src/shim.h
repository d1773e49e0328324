// Thin C++ shim between the cxx bridge (src/ffi.rs) and tt-metal's exported packer functions
// in libtt_metal.so (ttnn 0.81.1 wheel). No tt-metal headers ship in the wheel, so shim.cc
// declares the prototypes itself, matching the mangled names `nm -DC libtt_metal.so` prints.
#pragma once

#include <cstdint>

#include "rust/cxx.h"

namespace tt_oracle {

std::uint8_t u32_to_bfp(std::uint8_t format, std::uint32_t input, std::uint32_t shared_exp, bool truncate);
std::uint32_t bfp_to_u32(std::uint8_t format, std::uint8_t code, std::uint8_t shared_exp);
rust::Vec<std::uint32_t> pack_tiles(std::uint8_t format, rust::Slice<const float> values);
rust::Vec<float> unpack_tiles(std::uint8_t format, rust::Slice<const std::uint32_t> words);

}  // namespace tt_oracle
