// Load-time repacking between kernel layouts (kernels.h). Baseline code: runs once per weight.
#include <cstring>

#include "kernels/kernels.h"

namespace bitnet::kernels {

void pack_l2_from_t2(const T2Matrix& src, uint8_t* dst) {
    const int64_t n_tiles = (src.n_rows + kL2TileRows - 1) / kL2TileRows;
    const int64_t n_chunks = src.k_pad / 4;
    const int64_t row_bytes = src.k_pad / 4;
    // Padding rows hold zero weights: code 1 in both columns of a pair, index 3*1 + 1 = 4.
    std::memset(dst, 0x44, static_cast<size_t>(n_tiles * n_chunks * kL2ChunkBytes));
    for (int64_t r = 0; r < src.n_rows; ++r) {
        const uint8_t* row = src.codes + r * row_bytes;
        uint8_t* tile = dst + (r / kL2TileRows) * n_chunks * kL2ChunkBytes;
        const int64_t lane = r % kL2TileRows;
        for (int64_t c = 0; c < n_chunks; ++c) {
            // Columns 4c .. 4c+3 lie in one T2 block (128 is a multiple of 4): block b, offset o.
            const int64_t j = 4 * c;
            const uint8_t* block = row + (j / kT2Block) * kT2BlockBytes;
            const int64_t o = j % kT2Block;
            int codes[4];
            for (int i = 0; i < 4; ++i) {
                const int64_t within = o + i;
                codes[i] = (block[within % 32] >> (2 * (within / 32))) & 3;
            }
            const int lo = 3 * codes[0] + codes[1];
            const int hi = 3 * codes[2] + codes[3];
            tile[c * kL2ChunkBytes + lane] = static_cast<uint8_t>(lo | (hi << 4));
        }
    }
}

}  // namespace bitnet::kernels
