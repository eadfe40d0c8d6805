// Causal grouped-query attention of a step's tokens over the paged KV cache.
//
// Each query token attends to positions [0, pos] of its own sequence, read through its block
// table. The positions are cut into chunks of kAttnChunk at fixed absolute boundaries
// (0, 256, 512, ...). For one (token, kv head, chunk) the kernels compute the scores of the
// query heads that share the kv head (each K row is loaded once for all of them), the chunk's
// softmax statistics (max m, sum l of exp(s - m)) and the weighted sum o of its V rows; the
// partial results of all chunks are then merged in chunk order:
//     M = max_c m_c,  out = (sum_c exp(m_c - M) * o_c) / (sum_c exp(m_c - M) * l_c).
// Work is split over threads by (token, kv head, chunk), but every number a query gets depends
// only on its own query vector, its positions and the cached rows, so the result is the same bit
// for bit whatever the thread count, the other tokens in the step, the block size or how the
// sequence was split into steps (docs/architecture.md, "Batch invariance").
//
// Not thread-safe; owned by a BatchDecoder, which calls plan() once per step and run() per layer.
#pragma once

#include <cstdint>
#include <vector>

#include "core/aligned_buffer.h"
#include "kernels/kernels.h"
#include "model/config.h"
#include "model/kv_cache.h"
#include "runtime/thread_pool.h"

namespace bitnet {

constexpr int64_t kAttnChunk = 256;  // positions per chunk (absolute boundaries)

// One query token of a step: its position and its sequence's block table.
struct AttnQuery {
    const int32_t* block_table = nullptr;
    int64_t pos = 0;  // attends to positions [0, pos]
};

class PagedAttention {
 public:
    PagedAttention(const ModelConfig& config, int n_threads);

    // Plans the work of a step's queries (kept by pointer until the next plan()).
    void plan(const std::vector<AttnQuery>& queries);

    // out (n_queries, n_heads * head_dim) = attention of layer `layer`, from the queries' heads
    // q (n_queries, n_heads * head_dim), already multiplied by 1/sqrt(head_dim); against a q8_0
    // cache also their Q8 blocks q8 (n_queries, n_heads * head_dim) and q8_d (.., / 32).
    void run(ThreadPool& pool, const kernels::KernelTable& kt, const KvCache& cache, int64_t layer,
             const float* q, const int8_t* q8, const float* q8_d, float* out);

    // Completes row `query` of run()'s out (n_heads * head_dim floats at out). When the step's
    // partial results fit one pass, run() leaves the merge of queries with several chunks to
    // this call, so that the caller can do it in its next parallel region (one barrier less per
    // layer); otherwise, and for one-chunk queries, it does nothing. Thread-safe across queries.
    void finish(int64_t query, float* out);

 private:
    struct Item {
        int32_t query;
        int32_t kv_head;
        int32_t chunk;
    };
    // A run of cached rows of one chunk inside one tile (K or V), as the kernels take it.
    struct Piece {
        int64_t first;            // its first row within the chunk
        int64_t rows;
        const uint8_t* quants;    // rows * row_bytes
        const uint16_t* scales;   // q8_0: rows * head_dim / 32 fp16 scales
    };
    struct Pass {
        int64_t first_query, end_query;  // queries [first, end)
        int64_t first_item, end_item;    // items of these queries
        bool merge;                      // some query has several chunks to merge
    };
    // Partial results of one (query, head, chunk): o (head_dim), then m, l; slot_floats_ apart.
    float* slot(int64_t query, int64_t head, int64_t chunk) {
        return partial_.data() +
               ((chunk_base_[static_cast<size_t>(query)] - slot_base_ + chunk) * n_heads_ + head) *
                   slot_floats_;
    }
    void compute_item(const kernels::KernelTable& kt, const KvCache& cache, int64_t layer,
                      const Item& item, const float* q, const int8_t* q8, const float* q8_d,
                      float* scores, float* stats, Piece* pieces, float* out);
    void merge(int64_t query, int64_t head, float* out);
    bool merge_deferred() const;

    int64_t n_heads_ = 0;
    int64_t n_kv_heads_ = 0;
    int64_t head_dim_ = 0;
    int64_t group_ = 0;        // query heads per kv head
    int64_t slot_floats_ = 0;  // head_dim + 2, rounded up to 16 floats
    int n_threads_ = 1;

    std::vector<AttnQuery> queries_;
    std::vector<int64_t> chunk_base_;  // (n_queries + 1) first chunk slot of each query
    int64_t slot_base_ = 0;            // chunk_base_ of the running pass's first query
    std::vector<Item> items_;
    std::vector<Pass> passes_;
    std::vector<float> partial_;                  // (chunks of a pass, n_heads, slot_floats_)
    AlignedBuffer<float> scores_;                 // (n_threads, group, kAttnChunk)
    AlignedBuffer<float> stats_;                  // (n_threads, 2 * group) m and l of one chunk
    std::vector<Piece> pieces_;                   // (n_threads, 2 * kAttnChunk) pieces of one chunk
};

}  // namespace bitnet
