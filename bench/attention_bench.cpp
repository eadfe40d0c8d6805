// Attention benchmark: one decoded token's attention over a paged KV cache at a context depth,
// every layer of a real model shape, per KV type and thread count. Isolates what decoding at
// depth adds to a token (the BitLinear part does not change with depth).
//
//   attention_bench [--model 2b4t] [--depth 1024,4096] [--kv f16,q8_0,f32] [--threads 1,2]
//                   [--isa ref,avx2] [--reps 7] [--block-tokens 32]
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

int usage(const char* why) {
    std::fprintf(stderr, "attention_bench: %s\nusage: attention_bench [--model 2b4t|large|3b] "
                         "[--depth D,..] [--kv f16,q8_0,f32] [--threads N,..] [--isa ref,avx2] [--reps N] "
                         "[--block-tokens N]\n", why);
    return 2;
}

}  // namespace

int main(int argc, char** argv) {
    std::string model = "2b4t", depths = "1024,4096", kvs = "f16,q8_0,f32", threads = "1,2";
    std::string isas = kernels::active_kernels().isa;
    int reps = 7;
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
        else if (a == "--block-tokens") block_tokens = std::max<int64_t>(1, std::atoll(v.c_str()));
        else return usage(("unknown option " + a).c_str());
    }
    const ModelConfig c = shape(model);
    if (c.n_layers == 0) return usage("unknown model shape");
    std::printf("cpu: %s (%s); model %s: %lld layers, %lld heads, %lld kv heads, head_dim %lld\n",
                kernels::cpu_features().brand.c_str(), kernels::cpu_features().summary().c_str(),
                model.c_str(), static_cast<long long>(c.n_layers), static_cast<long long>(c.n_heads),
                static_cast<long long>(c.n_kv_heads), static_cast<long long>(c.head_dim));
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
                            attn.finish(0, out.data());  // the merge of the chunks
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
