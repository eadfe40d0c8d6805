// The paged KV cache: a pool of fixed-size blocks, each holding the keys and values of
// block_tokens consecutive positions for every layer and kv head.
//
// A sequence owns an ordered list of blocks (its block table, kept by the caller): position p of
// the sequence lives in block table[p / block_tokens], row p % block_tokens. Sequences that share
// a prompt prefix can share its full blocks. The memory of all n_blocks is reserved up front but
// only written blocks become resident (core/reserved_memory.h): memory grows with use.
//
// Layout of one block (docs/kernels.md, "KV cache", has the byte diagrams): for each layer, the
// K tiles of kv heads 0 .. n_kv_heads-1, then the V tiles; a tile is block_tokens rows of
// head_dim values, contiguous (attention streams one head's rows), rounded up to 64 bytes:
//   f32:  float rows (block_tokens, head_dim)
//   f16:  fp16 rows (block_tokens, head_dim)
//   q8_0: int8 rows (block_tokens, head_dim), then fp16 scales (block_tokens, head_dim / 32)
//
// Owns its memory. Writers take mutex() (a decoder's step does), so steps and block copies from
// different threads take turns. Throws ShapeError for bad
// sizes and block ids, UnsupportedError for q8_0 with a head_dim that is not a multiple of 32.
#pragma once

#include <cstdint>
#include <mutex>
#include <string>

#include "core/reserved_memory.h"
#include "kernels/kernels.h"
#include "model/config.h"

namespace bitnet {

enum class KvType {
    kF32,   // float32: exact
    kF16,   // IEEE fp16, round half to even: half the memory
    kQ8_0,  // blocks of 32 int8 values with an fp16 scale (ggml Q8_0): about a quarter
};

const char* kv_type_name(KvType type);
// "f32" | "f16" | "q8_0"; anything else is a ShapeError naming `what` (the parameter).
KvType kv_type_from_name(const std::string& name, const char* what = "kv_type");

constexpr int64_t kDefaultBlockTokens = 32;
constexpr int64_t kMaxBlockTokens = 65536;

class KvCache {
 public:
    KvCache(const ModelConfig& config, KvType type, int64_t block_tokens, int64_t n_blocks);

    KvType type() const { return type_; }
    int64_t block_tokens() const { return block_tokens_; }
    int64_t n_blocks() const { return n_blocks_; }
    int64_t n_layers() const { return n_layers_; }
    int64_t n_kv_heads() const { return n_kv_heads_; }
    int64_t head_dim() const { return head_dim_; }
    // Bytes one block takes (tiles rounded up to 64 bytes).
    int64_t bytes_per_block() const { return block_bytes_; }
    // Bytes of K and V of one position over every layer, without the tiles' padding.
    int64_t bytes_per_token() const;
    int64_t reserved_bytes() const { return static_cast<int64_t>(memory_.size()); }
    // Memory of the cache that is resident now (pages written at least once).
    int64_t resident_bytes() const { return static_cast<int64_t>(memory_.resident_bytes()); }
    // Whether a model has the shape this cache was made for.
    bool fits(const ModelConfig& config) const;

    // The K (value == false) or V tile of (block, layer, kv head): block_tokens rows. For q8_0
    // the fp16 scales follow the quants at scales_offset() bytes.
    uint8_t* tile(int64_t block, int64_t layer, int64_t head, bool value) {
        return memory_.data() + block * block_bytes_ +
               ((layer * 2 + (value ? 1 : 0)) * n_kv_heads_ + head) * tile_bytes_;
    }
    const uint8_t* tile(int64_t block, int64_t layer, int64_t head, bool value) const {
        return const_cast<KvCache*>(this)->tile(block, layer, head, value);
    }
    // Bytes of one row's values (f32: 4 * head_dim, f16: 2 * head_dim, q8_0: head_dim).
    int64_t row_bytes() const { return row_bytes_; }
    // Offset of the q8_0 scales within a tile (block_tokens * head_dim).
    int64_t scales_offset() const { return block_tokens_ * head_dim_; }

    // Stores head_dim floats x as row `row` of a tile, converted to the cache type with kt
    // (q8_0: quantize_q8, then the scales rounded to fp16, as ggml's quantize_row_q8_0).
    // `scratch` holds head_dim / 32 floats.
    void store_row(const kernels::KernelTable& kt, const float* x, uint8_t* tile, int64_t row,
                   float* scratch) const;

    // Copies positions [0, n_tokens) of block src into block dst, every layer and head (the
    // copy-on-write of a shared, partly filled block). src == dst does nothing. Throws ShapeError.
    void copy_block(int64_t src, int64_t dst, int64_t n_tokens);

    // Held by whoever writes the cache (a decoder's step, copy_block from the bindings), so
    // that writers from different threads take turns.
    std::mutex& mutex() const { return mutex_; }

 private:
    mutable std::mutex mutex_;
    KvType type_;
    int64_t block_tokens_ = 0;
    int64_t n_blocks_ = 0;
    int64_t n_layers_ = 0;
    int64_t n_kv_heads_ = 0;
    int64_t head_dim_ = 0;
    int64_t row_bytes_ = 0;
    int64_t tile_bytes_ = 0;
    int64_t block_bytes_ = 0;
    ReservedMemory memory_;
};

}  // namespace bitnet
