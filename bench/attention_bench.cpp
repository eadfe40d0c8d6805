// Attention benchmark: one decoded token's attention over a paged KV cache at a context depth,
// every layer of a real model shape, per KV type and thread count. Isolates what decoding at
// depth adds to a token (the BitLinear part does not change with depth).
//
//   attention_bench [--model 2b4t] [--depth 1024,4096] [--kv f16,q8_0,f32] [--threads 1,2]
//                   [--isa ref,avx2] [--reps 7] [--block-tokens 32] [--kernels 1 [--piece-rows N]]
//
// --kernels 1 times the kernels alone instead: one GQA group of the shape against one chunk of
// kAttnChunk rows held in L1/L2 (scores, softmax, V accumulation; the rows in calls of
// --piece-rows, 32 as the decoder cuts them, default the whole chunk in one call), on the calling
// thread's CPU clock (the least over --reps batches of calls): what the kernels cost without
// memory stalls.
//
// The cache is filled with random K/V (every block written, so it is resident and read from
// memory as in a real decode). Prints, per configuration: the median time of the 30 layers' attention
// for one token (ms, with min..max over --reps), the KV bytes read per second, and the least
// process CPU time of a repetition (on a busy machine the better guide). Reports, never
// asserts; exits 2 on a bad command line.
#include <algorithm>
#include <chrono>
#include <ctime>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu_features.h"
#include "kernels/kernels.h"
#include "model/attention.h"
#include "model/config.h"
#include "model/kv_cache.h"
#include "runtime/thread_pool.h"

using namespace bitnet;

namespace {

double thread_ms() {
    timespec t{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return 1e3 * static_cast<double>(t.tv_sec) + 1e-6 * static_cast<double>(t.tv_nsec);
}

// The least thread CPU time of one call of fn, over reps batches of calls lasting about 20 ms.
template <typename F>
double least_us(int reps, F&& fn) {
    int calls = 1;
    for (;;) {  // calibrate the batch
        const double t0 = thread_ms();
        for (int i = 0; i < calls; ++i) fn();
        if (thread_ms() - t0 >= 20.0 || calls >= (1 << 20)) break;
        calls *= 2;
    }
    double best = 1e30;
    for (int r = 0; r < reps; ++r) {
        const double t0 = thread_ms();
        for (int i = 0; i < calls; ++i) fn();
        best = std::min(best, (thread_ms() - t0) * 1e3 / calls);
    }
    return best;
}

std::vector<std::string> split(const std::string& s) {
    std::vector<std::string> out;
    size_t start = 0;
    while (start <= s.size()) {
        const size_t comma = s.find(',', start);
        const size_t end = comma == std::string::npos ? s.size() : comma;
        if (end > start) out.push_back(s.substr(start, end - start));
        start = end + 1;
    }
    return out;
}

ModelConfig shape(const std::string& name) {
    ModelConfig c;
    if (name == "2b4t") {  // microsoft/bitnet-b1.58-2B-4T
        c.n_layers = 30, c.n_heads = 20, c.n_kv_heads = 5, c.head_dim = 128, c.n_embd = 2560;
    } else if (name == "large") {  // 1bitLLM/bitnet_b1_58-large
        c.n_layers = 24, c.n_heads = 16, c.n_kv_heads = 16, c.head_dim = 96, c.n_embd = 1536;
    } else if (name == "3b") {  // 1bitLLM/bitnet_b1_58-3B
        c.n_layers = 26, c.n_heads = 32, c.n_kv_heads = 32, c.head_dim = 100, c.n_embd = 3200;
    } else {
        c.n_layers = 0;
    }
    return c;
}

// --kernels: per-kernel times for one (GQA group, chunk) item, hot in cache.
void bench_kernels(const ModelConfig& c, const std::vector<std::string>& isas, const std::vector<std::string>& kvs,
                   int reps, int64_t piece_rows) {
    const int64_t hd = c.head_dim, group = c.n_heads / c.n_kv_heads, n = kAttnChunk, nb = hd / 32;
    std::mt19937 rng(11);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::vector<float> q(static_cast<size_t>(group * hd)), rows(static_cast<size_t>(n * hd));
    for (auto& v : q) v = normal(rng) * 0.09f;
    for (auto& v : rows) v = normal(rng);
    const kernels::KernelTable& ref = kernels::reference_kernels();
    std::vector<uint16_t> f16(rows.size()), d16(rows.size() / 32 + 1);
    std::vector<int8_t> q8(rows.size()), qq(q.size());
    std::vector<float> d(rows.size() / 32 + 1), qd(q.size() / 32 + 1);
    ref.to_f16(rows.data(), f16.data(), n * hd);
    if (hd % 32 == 0) {
        for (int64_t j = 0; j < n; ++j) ref.quantize_q8(&rows[j * hd], hd, &q8[j * hd], &d[j * nb]);
        ref.to_f16(d.data(), d16.data(), n * nb);
        ref.quantize_q8(q.data(), group * hd, qq.data(), qd.data());
    }
    std::vector<float> s(static_cast<size_t>(group * n)), p(s.size()), m(group), l(group);
    std::vector<float> o(static_cast<size_t>(group * hd));
    for (auto& v : p) v = std::uniform_real_distribution<float>(0.0f, 1.0f / 64)(rng);
    std::printf("kernels, one item: %lld heads x %lld rows in calls of %lld rows, head_dim %lld, thread CPU time "
                "(least of %d)\n",
                static_cast<long long>(group), static_cast<long long>(n), static_cast<long long>(piece_rows),
                static_cast<long long>(hd), reps);
    // Warm-up (clock and caches): the first measurement of a process otherwise reads high.
    const double warm_start = thread_ms();
    while (thread_ms() - warm_start < 200.0) {
        ref.attn_scores_f32(q.data(), group, hd, rows.data(), n, s.data(), n, nullptr, 0);
    }
    for (const std::string& isa : isas) {
        const kernels::KernelTable* kt = kernels::kernels_for(isa.c_str());
        if (kt == nullptr) continue;
        for (const std::string& kv : kvs) {
            const KvType type = kv_type_from_name(kv);
            if (type == KvType::kQ8_0 && hd % 32 != 0) continue;
            // Each kernel runs over the chunk in calls of piece_rows rows, as PagedAttention cuts it.
            const double t_scores = least_us(reps, [&] {
                for (int64_t j = 0; j < n; j += piece_rows) {
                    const int64_t m = std::min(piece_rows, n - j);
                    if (type == KvType::kF32) {
                        kt->attn_scores_f32(q.data(), group, hd, &rows[j * hd], m, &s[j], n, nullptr, 0);
                    }
                    if (type == KvType::kF16) {
                        kt->attn_scores_f16(q.data(), group, hd, &f16[j * hd], m, &s[j], n, nullptr, 0);
                    }
                    if (type == KvType::kQ8_0) {
                        kt->attn_scores_q8(qq.data(), qd.data(), group, hd, &q8[j * hd], &d16[j * nb], m, &s[j], n,
                                           nullptr, 0);
                    }
                }
            });
            const double t_softmax = least_us(reps, [&] {
                std::copy(p.begin(), p.end(), s.begin());
                kt->attn_softmax(s.data(), group, n, n, m.data(), l.data());
            });
            const double t_accum = least_us(reps, [&] {
                for (int64_t j = 0; j < n; j += piece_rows) {
                    const int64_t m = std::min(piece_rows, n - j);
                    if (type == KvType::kF32) {
                        kt->attn_accum_f32(&p[j], n, group, hd, &rows[j * hd], m, o.data(), hd, nullptr, 0);
                    }
                    if (type == KvType::kF16) {
                        kt->attn_accum_f16(&p[j], n, group, hd, &f16[j * hd], m, o.data(), hd, nullptr, 0);
                    }
                    if (type == KvType::kQ8_0) {
                        kt->attn_accum_q8(&p[j], n, group, hd, &q8[j * hd], &d16[j * nb], m, o.data(), hd, nullptr, 0);
                    }
                }
            });
            // One token at depth D runs n_layers * n_kv_heads * (D + 1) / n of these items.
            const double per_4096 = static_cast<double>(c.n_layers * c.n_kv_heads) * 4097.0 / static_cast<double>(n);
            std::printf("%-10s kv %-5s scores %7.2f us  softmax %6.2f us  accum %7.2f us  (x%.0f items: %6.2f ms "
                        "per token at depth 4096, one thread)\n",
                        isa.c_str(), kv.c_str(), t_scores, t_softmax, t_accum, per_4096,
                        (t_scores + t_softmax + t_accum) * per_4096 / 1e3);
            std::fflush(stdout);
        }
    }
}

int usage(const char* why) {
    std::fprintf(stderr, "attention_bench: %s\nusage: attention_bench [--model 2b4t|large|3b] "
                         "[--depth D,..] [--kv f16,q8_0,f32] [--threads N,..] [--isa ref,avx2] [--reps N] "
                         "[--block-tokens N] [--kernels 1 [--piece-rows N]]\n", why);
    return 2;
}

}  // namespace

int main(int argc, char** argv) {
    std::string model = "2b4t", depths = "1024,4096", kvs = "f16,q8_0,f32", threads = "1,2";
    std::string isas = kernels::active_kernels().isa;
    int reps = 7;
    bool kernel_mode = false;
    int64_t piece_rows = kAttnChunk;
    int64_t block_tokens = kDefaultBlockTokens;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (i + 1 >= argc) return usage(("missing value of " + a).c_str());
        const std::string v = argv[++i];
        if (a == "--model") model = v;
        else if (a == "--depth") depths = v;
        else if (a == "--kv") kvs = v;
        else if (a == "--threads") threads = v;
        else if (a == "--isa") isas = v;
        else if (a == "--reps") reps = std::max(1, std::atoi(v.c_str()));
        else if (a == "--kernels") kernel_mode = std::atoi(v.c_str()) != 0;
        else if (a == "--piece-rows") piece_rows = std::clamp<int64_t>(std::atoll(v.c_str()), 1, kAttnChunk);
        else if (a == "--block-tokens") block_tokens = std::max<int64_t>(1, std::atoll(v.c_str()));
        else return usage(("unknown option " + a).c_str());
    }
    const ModelConfig c = shape(model);
    if (c.n_layers == 0) return usage("unknown model shape");
    std::printf("cpu: %s (%s); model %s: %lld layers, %lld heads, %lld kv heads, head_dim %lld\n",
                kernels::cpu_features().brand.c_str(), kernels::cpu_features().summary().c_str(),
                model.c_str(), static_cast<long long>(c.n_layers), static_cast<long long>(c.n_heads),
                static_cast<long long>(c.n_kv_heads), static_cast<long long>(c.head_dim));
    if (kernel_mode) {
        bench_kernels(c, split(isas), split(kvs), reps, piece_rows);
        return 0;
    }
    std::mt19937 rng(7);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    const int64_t q_dim = c.n_heads * c.head_dim;
    std::vector<float> q(static_cast<size_t>(q_dim)), out(q.size());
    for (auto& v : q) v = normal(rng) * 0.09f;
    std::vector<int8_t> q8(q.size());
    std::vector<float> q8_d(q.size() / 32 + 1);
    for (const std::string& isa : split(isas)) {
        const kernels::KernelTable* kt = kernels::kernels_for(isa.c_str());
        if (kt == nullptr) {
            std::printf("isa %s: not available\n", isa.c_str());
            continue;
        }
        if (c.head_dim % 32 == 0) kt->quantize_q8(q.data(), q_dim, q8.data(), q8_d.data());
        for (const std::string& kv_name : split(kvs)) {
            const KvType type = kv_type_from_name(kv_name);
            if (type == KvType::kQ8_0 && c.head_dim % 32 != 0) continue;
            for (const std::string& d : split(depths)) {
                const int64_t depth = std::atoll(d.c_str());
                const int64_t bt = block_tokens;
                const int64_t n_blocks = depth / bt + 1;
                KvCache cache(c, type, bt, n_blocks);
                std::vector<float> row(static_cast<size_t>(c.head_dim)), scratch(row.size());
                for (int64_t b = 0; b < n_blocks; ++b) {  // random rows in block 0, copies elsewhere
                    if (b > 0) {
                        cache.copy_block(0, b, bt);
                        continue;
                    }
                    for (int64_t l = 0; l < c.n_layers; ++l) {
                        for (int64_t h = 0; h < c.n_kv_heads; ++h) {
                            for (bool value : {false, true}) {
                                for (int64_t r = 0; r < bt; ++r) {
                                    for (auto& v : row) v = normal(rng);
                                    cache.store_row(*kt, row.data(), cache.tile(b, l, h, value), r, scratch.data());
                                }
                            }
                        }
                    }
                }
                std::vector<int32_t> table(static_cast<size_t>(n_blocks));
                for (int64_t b = 0; b < n_blocks; ++b) table[static_cast<size_t>(b)] = static_cast<int32_t>(b);
                for (const std::string& t : split(threads)) {
                    const int n_threads = std::max(1, std::atoi(t.c_str()));
                    ThreadPool pool(n_threads);
                    PagedAttention attn(c, n_threads);
                    attn.plan({AttnQuery{table.data(), depth}});
                    std::vector<double> ms, cpu_ms;
                    for (int rep = 0; rep < reps + 1; ++rep) {
                        timespec c0{}, c1{};
                        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c0);
                        const auto t0 = std::chrono::steady_clock::now();
                        for (int64_t l = 0; l < c.n_layers; ++l) {
                            attn.run(pool, *kt, cache, l, q.data(), q8.data(), q8_d.data(), out.data());
                        }
                        const auto t1 = std::chrono::steady_clock::now();
                        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c1);
                        if (rep == 0) continue;
                        ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
                        cpu_ms.push_back(1e3 * static_cast<double>(c1.tv_sec - c0.tv_sec) +
                                         1e-6 * static_cast<double>(c1.tv_nsec - c0.tv_nsec));
                    }
                    std::sort(ms.begin(), ms.end());
                    std::sort(cpu_ms.begin(), cpu_ms.end());
                    const double med = ms[ms.size() / 2];
                    const double gb = static_cast<double>(cache.bytes_per_token()) * static_cast<double>(depth + 1) / 1e9;
                    std::printf("%-5s kv %-5s depth %6lld threads %2d: %8.3f ms/token (%.3f..%.3f)  %6.1f GB/s of KV"
                                "  cpu %.3f ms (least; all threads)\n",
                                isa.c_str(), kv_name.c_str(), static_cast<long long>(depth), n_threads, med,
                                ms.front(), ms.back(), gb / (med / 1e3), cpu_ms.front());
                    std::fflush(stdout);
                }
            }
        }
    }
    return 0;
}
