// PagedAttention: the chunked, thread-split attention of model/attention.h.
#include "model/attention.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>

namespace bitnet {
namespace {

// Floats of partial results one pass may hold (8 MiB): long prefills run in several passes.
constexpr int64_t kPassFloats = int64_t{2} << 20;

int64_t n_chunks(int64_t pos) { return pos / kAttnChunk + 1; }

// Asks for bytes at p to be brought into L2 (a hint: GCC/Clang builtin, no ISA code, never
// faults). Used for the first pieces of a chunk and the q8_0 scales; the rest of the stream is
// prefetched by the kernels themselves (kernels.h, "prefetch hint").
void prefetch(const uint8_t* p, int64_t bytes) {
    for (int64_t i = 0; i < bytes; i += 64) __builtin_prefetch(p + i, 0, 2);
}

// Attention streams the KV cache from memory in tiles that lie apart (one per block), and the
// accumulation walks a tile column block by column block, so the hardware prefetchers keep few
// misses in flight. Each kernel call gets the next piece's rows as a prefetch hint and spreads
// prefetches into L2 over its work. Measured on Zen 4 (bench/attention_bench, 2B4T shape, f16,
// depth 4096, one thread, per token): 45 ms without prefetches; the same with prefetches into
// L1 (they wait for the few L1 miss buffers); 24 ms with bursts into L2 before each piece;
// 21 ms spread inside the kernels (pieces of 32 rows, one piece ahead; 8 or 16 rows, or two
// pieces ahead, measured slower).
constexpr int64_t kPieceRows = 32;   // rows per kernel call
constexpr int64_t kAheadPieces = 1;  // the piece whose rows a kernel call prefetches

}  // namespace

PagedAttention::PagedAttention(const ModelConfig& config, int n_threads)
    : n_heads_(config.n_heads),
      n_kv_heads_(config.n_kv_heads),
      head_dim_(config.head_dim),
      group_(config.n_heads / config.n_kv_heads),
      slot_floats_((config.head_dim + 2 + 15) / 16 * 16),
      n_threads_(n_threads) {
    const auto per_thread = static_cast<size_t>(group_ * kAttnChunk);
    scores_ = AlignedBuffer<float>(per_thread * static_cast<size_t>(n_threads));
    stats_ = AlignedBuffer<float>(static_cast<size_t>(2 * group_ * n_threads));
    pieces_.resize(static_cast<size_t>(2 * kAttnChunk * n_threads));
}

void PagedAttention::plan(const std::vector<AttnQuery>& queries) {
    queries_ = queries;
    const auto n = static_cast<int64_t>(queries_.size());
    chunk_base_.assign(static_cast<size_t>(n + 1), 0);
    for (int64_t t = 0; t < n; ++t) {
        chunk_base_[static_cast<size_t>(t + 1)] =
            chunk_base_[static_cast<size_t>(t)] + n_chunks(queries_[static_cast<size_t>(t)].pos);
    }
    // Passes: consecutive queries whose partial results fit kPassFloats (at least one query).
    items_.clear();
    passes_.clear();
    const int64_t per_chunk = n_heads_ * slot_floats_;
    int64_t largest = 0;
    for (int64_t t = 0; t < n;) {
        Pass pass{t, t, static_cast<int64_t>(items_.size()), 0, false};
        int64_t floats = 0;
        while (t < n) {
            const int64_t chunks = n_chunks(queries_[static_cast<size_t>(t)].pos);
            if (t > pass.first_query && floats + chunks * per_chunk > kPassFloats) break;
            floats += chunks * per_chunk;
            pass.merge = pass.merge || chunks > 1;
            for (int64_t g = 0; g < n_kv_heads_; ++g) {
                for (int64_t c = 0; c < chunks; ++c) {
                    items_.push_back({static_cast<int32_t>(t), static_cast<int32_t>(g),
                                      static_cast<int32_t>(c)});
                }
            }
            ++t;
        }
        pass.end_query = t;
        pass.end_item = static_cast<int64_t>(items_.size());
        passes_.push_back(pass);
        largest = std::max(largest, floats);
    }
    if (static_cast<int64_t>(partial_.size()) < largest) partial_.resize(static_cast<size_t>(largest));
}

void PagedAttention::compute_item(const kernels::KernelTable& kt, const KvCache& cache,
                                  int64_t layer, const Item& item, const float* q,
                                  const int8_t* q8, const float* q8_d, float* scores,
                                  float* stats, Piece* pieces, float* out) {
    const AttnQuery& query = queries_[static_cast<size_t>(item.query)];
    const int64_t hd = head_dim_;
    const int64_t nb = hd / kernels::kQ8Block;
    const int64_t bt = cache.block_tokens();
    const int64_t first = item.chunk * kAttnChunk;
    const int64_t n = std::min(first + kAttnChunk, query.pos + 1) - first;
    const int64_t h0 = item.kv_head * group_;
    const int64_t q_off = item.query * n_heads_ * hd + h0 * hd;  // this group's first head
    const KvType type = cache.type();
    const int64_t row_bytes = cache.row_bytes();

    // The chunk's rows as one stream of pieces: K rows 0 .. n-1, then V rows 0 .. n-1, in pieces
    // of at most kPieceRows rows inside one tile. While a piece is computed, the kernel spreads
    // prefetches (into L2) for the piece kAheadPieces further along the stream over its work.
    int64_t n_pieces = 0;
    for (int value = 0; value < 2; ++value) {
        for (int64_t j = 0; j < n;) {
            const int64_t pos = first + j;
            const int64_t len = std::min({kPieceRows, bt - pos % bt, n - j});
            const uint8_t* tile = cache.tile(query.block_table[pos / bt], layer, item.kv_head, value == 1);
            pieces[n_pieces++] = {j, len, tile + pos % bt * row_bytes,
                                  reinterpret_cast<const uint16_t*>(tile + cache.scales_offset()) + pos % bt * nb};
            j += len;
        }
    }
    const int64_t n_k = n_pieces / 2;  // K and V are cut the same way
    for (int64_t i = 0; i < std::min(kAheadPieces, n_pieces); ++i) {
        prefetch(pieces[i].quants, pieces[i].rows * row_bytes);
        if (type == KvType::kQ8_0) prefetch(reinterpret_cast<const uint8_t*>(pieces[i].scales), pieces[i].rows * nb * 2);
    }
    auto ahead = [&](int64_t i, const void** pf, int64_t* pf_bytes) {
        *pf = nullptr;
        *pf_bytes = 0;
        if (i + kAheadPieces >= n_pieces) return;
        const Piece& next = pieces[i + kAheadPieces];
        *pf = next.quants;
        *pf_bytes = next.rows * row_bytes;
        if (type == KvType::kQ8_0) prefetch(reinterpret_cast<const uint8_t*>(next.scales), next.rows * nb * 2);
    };

    // Scores of the group's heads against the chunk's K rows.
    for (int64_t i = 0; i < n_k; ++i) {
        const Piece& piece = pieces[i];
        const void* pf = nullptr;
        int64_t pf_bytes = 0;
        ahead(i, &pf, &pf_bytes);
        float* s = scores + piece.first;
        if (type == KvType::kF16) {
            kt.attn_scores_f16(q + q_off, group_, hd, reinterpret_cast<const uint16_t*>(piece.quants), piece.rows,
                               s, kAttnChunk, pf, pf_bytes);
        } else if (type == KvType::kF32) {
            kt.attn_scores_f32(q + q_off, group_, hd, reinterpret_cast<const float*>(piece.quants), piece.rows, s,
                               kAttnChunk, pf, pf_bytes);
        } else {
            kt.attn_scores_q8(q8 + q_off, q8_d + q_off / kernels::kQ8Block, group_, hd,
                              reinterpret_cast<const int8_t*>(piece.quants), piece.scales, piece.rows, s,
                              kAttnChunk, pf, pf_bytes);
        }
    }
    float* m = stats;
    float* l = stats + group_;
    kt.attn_softmax(scores, group_, n, kAttnChunk, m, l);

    // The weighted sum of the V rows, one sequential sum per element across the pieces.
    float* o = slot(item.query, h0, item.chunk);
    for (int64_t h = 0; h < group_; ++h) std::fill(o + h * slot_floats_, o + h * slot_floats_ + hd, 0.0f);
    for (int64_t i = n_k; i < n_pieces; ++i) {
        const Piece& piece = pieces[i];
        const void* pf = nullptr;
        int64_t pf_bytes = 0;
        ahead(i, &pf, &pf_bytes);
        const float* w = scores + piece.first;
        if (type == KvType::kF16) {
            kt.attn_accum_f16(w, kAttnChunk, group_, hd, reinterpret_cast<const uint16_t*>(piece.quants), piece.rows,
                              o, slot_floats_, pf, pf_bytes);
        } else if (type == KvType::kF32) {
            kt.attn_accum_f32(w, kAttnChunk, group_, hd, reinterpret_cast<const float*>(piece.quants), piece.rows, o,
                              slot_floats_, pf, pf_bytes);
        } else {
            kt.attn_accum_q8(w, kAttnChunk, group_, hd, reinterpret_cast<const int8_t*>(piece.quants), piece.scales,
                             piece.rows, o, slot_floats_, pf, pf_bytes);
        }
    }
    if (n_chunks(query.pos) == 1) {  // the only chunk: the output is o / l (merge() with one chunk)
        for (int64_t h = 0; h < group_; ++h) {
            const float inv = 1.0f / l[h];
            float* dst = out + item.query * n_heads_ * hd + (h0 + h) * hd;
            for (int64_t i = 0; i < hd; ++i) dst[i] = o[h * slot_floats_ + i] * inv;
        }
        return;
    }
    for (int64_t h = 0; h < group_; ++h) {
        o[h * slot_floats_ + hd] = m[h];
        o[h * slot_floats_ + hd + 1] = l[h];
    }
}

// out = (sum_c exp(m_c - M) * o_c) / (sum_c exp(m_c - M) * l_c), chunks in order. With one
// chunk this is o * (1 / l) exactly (exp(0) = 1, 0 + x = x).
void PagedAttention::merge(int64_t query, int64_t head, float* out) {
    const int64_t hd = head_dim_;
    const int64_t chunks = n_chunks(queries_[static_cast<size_t>(query)].pos);
    float max_m = -INFINITY;
    for (int64_t c = 0; c < chunks; ++c) max_m = std::max(max_m, slot(query, head, c)[hd]);
    float total = 0.0f;
    std::fill(out, out + hd, 0.0f);
    for (int64_t c = 0; c < chunks; ++c) {
        const float* o = slot(query, head, c);
        const float w = std::exp(o[hd] - max_m);
        total += o[hd + 1] * w;
        for (int64_t i = 0; i < hd; ++i) out[i] += o[i] * w;
    }
    const float inv = 1.0f / total;
    for (int64_t i = 0; i < hd; ++i) out[i] *= inv;
}

void PagedAttention::run(ThreadPool& pool, const kernels::KernelTable& kt, const KvCache& cache,
                         int64_t layer, const float* q, const int8_t* q8, const float* q8_d,
                         float* out) {
    const int64_t q_dim = n_heads_ * head_dim_;
    for (const Pass& pass : passes_) {
        slot_base_ = chunk_base_[static_cast<size_t>(pass.first_query)];
        std::atomic<int64_t> next{pass.first_item};
        pool.run([&](int ith, int) {
            float* scores = scores_.data() + static_cast<int64_t>(ith) * group_ * kAttnChunk;
            float* stats = stats_.data() + static_cast<int64_t>(ith) * 2 * group_;
            Piece* pieces = pieces_.data() + static_cast<int64_t>(ith) * 2 * kAttnChunk;
            for (int64_t i = next.fetch_add(1, std::memory_order_relaxed); i < pass.end_item;
                 i = next.fetch_add(1, std::memory_order_relaxed)) {
                compute_item(kt, cache, layer, items_[static_cast<size_t>(i)], q, q8, q8_d, scores, stats, pieces,
                             out);
            }
        });
        // Every query of the pass had one chunk (already written), or finish() merges them.
        if (!pass.merge || merge_deferred()) continue;
        pool.run([&](int ith, int nth) {
            const int64_t n_pairs = (pass.end_query - pass.first_query) * n_heads_;
            int64_t b = 0, e = 0;
            split_range(n_pairs, 1, ith, nth, &b, &e);
            for (int64_t i = b; i < e; ++i) {
                const int64_t t = pass.first_query + i / n_heads_;
                const int64_t h = i % n_heads_;
                if (n_chunks(queries_[static_cast<size_t>(t)].pos) == 1) continue;
                merge(t, h, out + t * q_dim + h * head_dim_);
            }
        });
    }
}

bool PagedAttention::merge_deferred() const { return passes_.size() == 1 && passes_[0].merge; }

void PagedAttention::finish(int64_t query, float* out) {
    if (!merge_deferred() || n_chunks(queries_[static_cast<size_t>(query)].pos) == 1) return;
    for (int64_t h = 0; h < n_heads_; ++h) merge(query, h, out + h * head_dim_);
}

}  // namespace bitnet
