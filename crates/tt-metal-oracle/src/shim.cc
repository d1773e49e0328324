// Declares tt-metal's packer entry points (prototypes only; the definitions are in
// libtt_metal.so) and adapts them to cxx types. Checked against `nm -DC libtt_metal.so`:
//   unsigned char convert_u32_to_bfp<(tt::DataFormat)6, false>(unsigned int, unsigned int, bool)
//   convert_bfp_to_u32(tt::DataFormat, unsigned char, unsigned char, bool)
//   std::vector<unsigned int> pack_as_bfp8_tiles<float>(std::span<float const>, bool, bool,
//       std::optional<tt::tt_metal::Tile> const&)     (and pack_as_bfp4_tiles<float>)
//   std::vector<float> unpack_bfp8_tiles_into_float_vec(std::span<unsigned int const>, bool, bool,
//       std::optional<tt::tt_metal::Tile> const&)     (and unpack_bfp4_...)
#include "tt-metal-oracle/src/shim.h"

#include <cstddef>
#include <optional>
#include <span>
#include <stdexcept>
#include <vector>

namespace tt {
// tt-metal: `enum class DataFormat : uint8_t`; only the two values used here.
enum class DataFormat : std::uint8_t { Bfp8_b = 6, Bfp4_b = 7 };
}  // namespace tt

namespace tt::tt_metal {
// Layout of tt-metal's `struct Tile` (tile.hpp): tile_shape[2], face_shape[2], tile_hw, face_hw,
// num_faces, partial_face, narrow_tile (u32 each), then two bools. Only its size matters here:
// std::optional<Tile> keeps its "engaged" flag right after the payload, and the packers read it
// at offset 40 (`cmpb $0x0,0x28(%r9)` in pack_as_bfp_tiles<6, float>). We only pass nullopt.
struct Tile {
    std::uint32_t words[9];
    bool transpose_within_face;
    bool transpose_of_faces;
};
static_assert(sizeof(Tile) == 40, "tt-metal's Tile is 40 bytes");
static_assert(sizeof(std::optional<Tile>) == 44, "std::optional<Tile>: 40-byte payload + flag");
}  // namespace tt::tt_metal

template <tt::DataFormat BfpFormat, bool truncate_bfp_mantissa>
std::uint8_t convert_u32_to_bfp(std::uint32_t input, std::uint32_t shared_exp, bool is_exp_a);

std::uint32_t convert_bfp_to_u32(tt::DataFormat bfp_format, std::uint8_t data, std::uint8_t shared_exp, bool is_exp_a);

template <typename T>
std::vector<std::uint32_t> pack_as_bfp8_tiles(
    std::span<const T> data, bool row_major_input, bool is_exp_a, const std::optional<tt::tt_metal::Tile>& tile);

template <typename T>
std::vector<std::uint32_t> pack_as_bfp4_tiles(
    std::span<const T> data, bool row_major_input, bool is_exp_a, const std::optional<tt::tt_metal::Tile>& tile);

std::vector<float> unpack_bfp8_tiles_into_float_vec(
    std::span<const std::uint32_t> bfp8_tiles,
    bool row_major_output,
    bool is_exp_a,
    const std::optional<tt::tt_metal::Tile>& tile);

std::vector<float> unpack_bfp4_tiles_into_float_vec(
    std::span<const std::uint32_t> bfp4_tiles,
    bool row_major_output,
    bool is_exp_a,
    const std::optional<tt::tt_metal::Tile>& tile);

namespace tt_oracle {

namespace {
constexpr std::uint8_t BFP8_B = 6;
constexpr std::uint8_t BFP4_B = 7;

void check_format(std::uint8_t format) {
    if (format != BFP8_B && format != BFP4_B) {
        throw std::invalid_argument("tt-metal-oracle: format must be Bfp8_b (6) or Bfp4_b (7)");
    }
}
}  // namespace

std::uint8_t u32_to_bfp(std::uint8_t format, std::uint32_t input, std::uint32_t shared_exp, bool truncate) {
    // is_exp_a = false: the "_b" formats keep bf16's 8-bit exponent.
    if (format == BFP8_B) {
        return truncate ? convert_u32_to_bfp<tt::DataFormat::Bfp8_b, true>(input, shared_exp, false)
                        : convert_u32_to_bfp<tt::DataFormat::Bfp8_b, false>(input, shared_exp, false);
    }
    return truncate ? convert_u32_to_bfp<tt::DataFormat::Bfp4_b, true>(input, shared_exp, false)
                    : convert_u32_to_bfp<tt::DataFormat::Bfp4_b, false>(input, shared_exp, false);
}

std::uint32_t bfp_to_u32(std::uint8_t format, std::uint8_t code, std::uint8_t shared_exp) {
    return convert_bfp_to_u32(static_cast<tt::DataFormat>(format), code, shared_exp, false);
}

rust::Vec<std::uint32_t> pack_tiles(std::uint8_t format, rust::Slice<const float> values) {
    check_format(format);
    const std::optional<tt::tt_metal::Tile> default_tile = std::nullopt;
    std::span<const float> input(values.data(), values.size());
    // row_major_input = true: each tile's 1024 values are given row-major.
    std::vector<std::uint32_t> packed = format == BFP8_B ? pack_as_bfp8_tiles<float>(input, true, false, default_tile)
                                                         : pack_as_bfp4_tiles<float>(input, true, false, default_tile);
    rust::Vec<std::uint32_t> out;
    out.reserve(packed.size());
    for (std::uint32_t w : packed) {
        out.push_back(w);
    }
    return out;
}

rust::Vec<float> unpack_tiles(std::uint8_t format, rust::Slice<const std::uint32_t> words) {
    check_format(format);
    const std::optional<tt::tt_metal::Tile> default_tile = std::nullopt;
    std::span<const std::uint32_t> input(words.data(), words.size());
    std::vector<float> values = format == BFP8_B ? unpack_bfp8_tiles_into_float_vec(input, true, false, default_tile)
                                                 : unpack_bfp4_tiles_into_float_vec(input, true, false, default_tile);
    rust::Vec<float> out;
    out.reserve(values.size());
    for (float v : values) {
        out.push_back(v);
    }
    return out;
}

}  // namespace tt_oracle
