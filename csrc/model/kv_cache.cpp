// KvCache: block geometry, row conversion into the cache types, block copies.
#include "model/kv_cache.h"

#include <cstring>
#include <new>

#include "core/error.h"

namespace bitnet {

const char* kv_type_name(KvType type) {
    switch (type) {
        case KvType::kF32: return "f32";
        case KvType::kF16: return "f16";
        case KvType::kQ8_0: return "q8_0";
    }
    return "?";
}

KvType kv_type_from_name(const std::string& name, const char* what) {
    if (name == "f32") return KvType::kF32;
    if (name == "f16") return KvType::kF16;
    if (name == "q8_0") return KvType::kQ8_0;
    throw ShapeError(str_cat(what, " must be 'f32', 'f16' or 'q8_0', not '", name, "'"));
}

KvCache::KvCache(const ModelConfig& config, KvType type, int64_t block_tokens, int64_t n_blocks)
    : type_(type),
      block_tokens_(block_tokens),
      n_blocks_(n_blocks),
      n_layers_(config.n_layers),
      n_kv_heads_(config.n_kv_heads),
      head_dim_(config.head_dim) {
    BITNET_CHECK(block_tokens >= 1 && block_tokens <= kMaxBlockTokens, ShapeError,
                 "block_tokens must be in [1, ", kMaxBlockTokens, "], got ", block_tokens);
    BITNET_CHECK(n_blocks >= 1, ShapeError, "n_blocks must be at least 1, got ", n_blocks);
    BITNET_CHECK(type != KvType::kQ8_0 || head_dim_ % kernels::kQ8Block == 0, UnsupportedError,
                 "a q8_0 KV cache needs a head_dim that is a multiple of 32, not ", head_dim_);
    const int64_t values = block_tokens * head_dim_;
    switch (type) {
        case KvType::kF32: row_bytes_ = 4 * head_dim_; break;
        case KvType::kF16: row_bytes_ = 2 * head_dim_; break;
        case KvType::kQ8_0: row_bytes_ = head_dim_; break;
    }
    int64_t tile = block_tokens * row_bytes_;
    if (type == KvType::kQ8_0) tile += values / kernels::kQ8Block * 2;
    tile_bytes_ = (tile + 63) / 64 * 64;
    block_bytes_ = 2 * n_layers_ * n_kv_heads_ * tile_bytes_;
    // Address space, not memory: a 47-bit user space holds 2^46 bytes with room to spare.
    constexpr int64_t kMaxReserve = int64_t{1} << 46;
    BITNET_CHECK(n_blocks <= kMaxReserve / block_bytes_, ShapeError, "n_blocks ", n_blocks,
                 " of ", block_bytes_, " bytes each exceeds the ", kMaxReserve,
                 " bytes a KV cache may reserve");
    const size_t bytes = static_cast<size_t>(n_blocks * block_bytes_);
    try {
        // Huge pages once a block fills one: fewer TLB misses, and residency still grows
        // block by block.
        memory_ = ReservedMemory(bytes, block_bytes_ >= int64_t{2} << 20);
    } catch (const std::bad_alloc&) {
        throw ShapeError(str_cat("cannot reserve ", bytes, " bytes of address space for a KV cache of ",
                                 n_blocks, " blocks"));
    }
}

int64_t KvCache::bytes_per_token() const {
    int64_t row = row_bytes_;
    if (type_ == KvType::kQ8_0) row += head_dim_ / kernels::kQ8Block * 2;
    return 2 * n_layers_ * n_kv_heads_ * row;
}

bool KvCache::fits(const ModelConfig& config) const {
    return config.n_layers == n_layers_ && config.n_kv_heads == n_kv_heads_ &&
           config.head_dim == head_dim_;
}

void KvCache::store_row(const kernels::KernelTable& kt, const float* x, uint8_t* tile, int64_t row,
                        float* scratch) const {
    switch (type_) {
        case KvType::kF32:
            std::memcpy(tile + row * row_bytes_, x, static_cast<size_t>(row_bytes_));
            break;
        case KvType::kF16:
            kt.to_f16(x, reinterpret_cast<uint16_t*>(tile + row * row_bytes_), head_dim_);
            break;
        case KvType::kQ8_0: {
            const int64_t n_scales = head_dim_ / kernels::kQ8Block;
            kt.quantize_q8(x, head_dim_, reinterpret_cast<int8_t*>(tile + row * row_bytes_), scratch);
            auto* d = reinterpret_cast<uint16_t*>(tile + scales_offset()) + row * n_scales;
            kt.to_f16(scratch, d, n_scales);
            break;
        }
    }
}

void KvCache::copy_block(int64_t src, int64_t dst, int64_t n_tokens) {
    BITNET_CHECK(src >= 0 && src < n_blocks_, ShapeError, "copy_block: src ", src,
                 " is not a block of the cache (0 <= id < ", n_blocks_, ")");
    BITNET_CHECK(dst >= 0 && dst < n_blocks_, ShapeError, "copy_block: dst ", dst,
                 " is not a block of the cache (0 <= id < ", n_blocks_, ")");
    BITNET_CHECK(n_tokens >= 0 && n_tokens <= block_tokens_, ShapeError, "copy_block: n_tokens ",
                 n_tokens, " is out of range [0, ", block_tokens_, "]");
    if (src == dst || n_tokens == 0) return;
    const int64_t n_scales = head_dim_ / kernels::kQ8Block;
    for (int64_t layer = 0; layer < n_layers_; ++layer) {
        for (int64_t head = 0; head < n_kv_heads_; ++head) {
            for (bool value : {false, true}) {
                const uint8_t* from = tile(src, layer, head, value);
                uint8_t* to = tile(dst, layer, head, value);
                std::memcpy(to, from, static_cast<size_t>(n_tokens * row_bytes_));
                if (type_ == KvType::kQ8_0) {
                    std::memcpy(to + scales_offset(), from + scales_offset(),
                                static_cast<size_t>(n_tokens * n_scales * 2));
                }
            }
        }
    }
}

}  // namespace bitnet
