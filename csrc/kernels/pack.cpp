// Load-time repacking between kernel layouts (kernels.h). Baseline code: runs once per weight.
#include <algorithm>
#include <cstring>
#include <vector>

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

void pack_t3_from_t2(const T2Matrix& src, uint8_t* dst) {
    const int64_t n_tiles = (src.n_rows + kT3TileRows - 1) / kT3TileRows;
    const int64_t k3 = padded_k3(src.k);
    const int64_t n_steps = k3 / kT3StepCols;
    const int64_t row_bytes = src.k_pad / 4;
    std::memset(dst, 0, static_cast<size_t>(t3_bytes(src.n_rows, src.k)));
    // Codes (w + 1) of one tile, (32, k3); padding rows and columns hold 1 (zero weight).
    std::vector<uint8_t> codes(static_cast<size_t>(kT3TileRows * k3));
    for (int64_t tile = 0; tile < n_tiles; ++tile) {
        std::fill(codes.begin(), codes.end(), uint8_t{1});
        for (int64_t rr = 0; rr < kT3TileRows; ++rr) {
            const int64_t r = tile * kT3TileRows + rr;
            if (r >= src.n_rows) break;
            const uint8_t* row = src.codes + r * row_bytes;
            uint8_t* c = codes.data() + rr * k3;
            for (int64_t j = 0; j < src.k; ++j) {
                const int64_t within = j % kT2Block;
                c[j] = (row[(j / kT2Block) * kT2BlockBytes + within % 32] >> (2 * (within / 32))) & 3;
            }
        }
        for (int64_t s = 0; s < n_steps; ++s) {
            uint8_t* step = dst + (tile * n_steps + s) * kT3StepBytes;
            for (int64_t rr = 0; rr < kT3TileRows; ++rr) {
                const uint8_t* c = codes.data() + rr * k3 + kT3StepCols * s;
                const bool upper = rr >= 16;
                for (int64_t m = 0; m < 4; ++m) {
                    const int idx = 9 * c[3 * m] + 3 * c[3 * m + 1] + c[3 * m + 2];
                    const int64_t lane = 4 * (rr % 16) + m;
                    step[lane] |= static_cast<uint8_t>((idx & 15) << (upper ? 4 : 0));
                    step[64 + (upper ? 8 : 0) + lane / 8] |=
                        static_cast<uint8_t>((idx >> 4) << (lane % 8));
                }
            }
        }
    }
}

void pack_q4h_from_q8(const Q8Matrix& src, int64_t row_begin, int64_t row_end, uint8_t* hi) {
    const int64_t row_bytes = src.n_cols / 2;
    for (int64_t r = row_begin; r < row_end; ++r) {
        const int8_t* q = src.q + r * src.n_cols;
        uint8_t* dst = hi + (r - row_begin) * row_bytes;
        for (int64_t b = 0; b < src.n_cols / kQ8Block; ++b) {
            for (int64_t j = 0; j < 16; ++j) {
                const int lo = (q[32 * b + j] + 128) >> 4;
                const int up = (q[32 * b + 16 + j] + 128) >> 4;
                dst[16 * b + j] = static_cast<uint8_t>(lo | up << 4);
            }
        }
    }
}

}  // namespace bitnet::kernels
