// Kernel benchmark: time, GOP/s and GB/s of every kernel family x ISA x real-model shape x
// tokens x threads, and a memory read-bandwidth probe, measured in the same run.
//
//   kernel_bench [--isa ref,avx2,...] [--family mad,lut,t3,b1,q8,quant] [--model 2b4t,large,3b]
//                [--tokens 1,128] [--threads 1,2] [--reps 7] [--min-ms 20] [--cold-mb 256]
//                [--membw-mb 512] [--no-membw] [--membw-only] [--json]
//
// Figures (docs/benchmarks.md):
//   GOP/s = 2 * rows * K * tokens / time (one multiply and one add per weight and token);
//   GB/s  = bytes of weights read / time (for quantize: bytes of floats read).
//   For the LUT family "lut" is gemm_l2 alone and "lut+build" adds build_lut for the same
//   activations (in a model the tables of one activation serve several matrices, q/k/v or
//   gate/up, so the truth for the MAD-vs-LUT choice is between the two).
// Each sample runs enough calls (at least --min-ms) cycling over copies of the weights that
// together exceed --cold-mb, so decode-shaped calls read weights from DRAM as a real forward pass
// does, not from a cache; the figure is the median over --reps samples, with the min and max.
// Weight buffers ask for transparent huge pages, as the model's repacked weights do.
//
// Benchmarks never assert: this program reports and exits 0 (2 on a bad command line).
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <time.h>

#include "core/aligned_buffer.h"
#include "membw.h"
#include "kernels/cpu_features.h"
#include "kernels/kernels.h"
#include "runtime/thread_pool.h"

using namespace bitnet;
using namespace bitnet::kernels;

namespace {

using Clock = std::chrono::steady_clock;

struct Options {
    std::vector<std::string> isas;  // empty: all available
    std::vector<std::string> families{"quant", "mad", "lut", "t3", "b1", "q8"};
    std::vector<std::string> models{"2b4t", "large", "3b"};
    std::vector<int64_t> tokens{1, 128};
    std::vector<int> threads{1, 2};
    int reps = 7;
    double min_ms = 20.0;
    int64_t cold_mb = 256;
    int64_t membw_mb = 512;
    bool membw = true;
    bool membw_only = false;
    bool json = false;
    bool thread_clock = false;  // --clock thread: CPU time of the calling thread (1 thread only)
};

std::vector<std::string> split_csv(const std::string& s) {
    std::vector<std::string> out;
    size_t start = 0;
    while (start <= s.size()) {
        const size_t comma = s.find(',', start);
        const std::string item = s.substr(start, comma == std::string::npos ? std::string::npos
                                                                              : comma - start);
        if (!item.empty()) out.push_back(item);
        if (comma == std::string::npos) break;
        start = comma + 1;
    }
    return out;
}

bool contains(const std::vector<std::string>& v, const std::string& x) {
    return std::find(v.begin(), v.end(), x) != v.end();
}

// A shape of one real model's matrix: rows (outputs) x K (inputs).
struct Shape {
    const char* model;
    const char* name;
    int64_t rows;
    int64_t k;
    bool output_layer;  // the Q8 output layer (the others are BitLinear)
};

const Shape kShapes[] = {
    {"2b4t", "attn_q/o", 2560, 2560, false},
    {"2b4t", "attn_k/v", 640, 2560, false},
    {"2b4t", "ffn_gate/up", 6912, 2560, false},
    {"2b4t", "ffn_down", 2560, 6912, false},
    {"2b4t", "output", 128256, 2560, true},
    {"large", "attn_q/k/v/o", 1536, 1536, false},
    {"large", "ffn_gate/up", 4096, 1536, false},
    {"large", "ffn_down", 1536, 4096, false},
    {"large", "output", 32002, 1536, true},
    // 1bitLLM-3B: rows not a multiple of 256 (K padded to 128: the tails of the kernels).
    {"3b", "attn_q/k/v/o", 3200, 3200, false},
    {"3b", "ffn_gate/up", 8640, 3200, false},
    {"3b", "ffn_down", 3200, 8640, false},
};

struct Result {
    std::string isa, family, model, shape;
    int64_t rows = 0, k = 0, tokens = 0;
    int threads = 1;
    double median_s = 0, min_s = 0, max_s = 0;
    double ops = 0;    // operations per call (GOP/s numerator)
    double bytes = 0;  // bytes read per call (GB/s numerator)
    int reps = 0;
    int64_t calls_per_sample = 0;
};

std::mt19937_64 g_rng(42);

// Random bytes each holding 4 ternary codes in {0, 1, 2} (never 3), as T2 needs.
void fill_t2(uint8_t* p, size_t n) {
    uint8_t table[81];
    for (int v = 0; v < 81; ++v) table[v] = static_cast<uint8_t>((v % 3) | (v / 3 % 3) << 2 |
                                                                 (v / 9 % 3) << 4 | (v / 27) << 6);
    for (size_t i = 0; i < n; ++i) p[i] = table[g_rng() % 81];
}

void fill_bytes(uint8_t* p, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const uint64_t r = g_rng();
        std::memcpy(p + i, &r, 8);
    }
    for (; i < n; ++i) p[i] = static_cast<uint8_t>(g_rng());
}

// Quantized activations of n_tokens random tokens, stride k_pad (zeros beyond k).
struct Acts {
    AlignedBuffer<int8_t> q;
    std::vector<float> scale;
    std::vector<int32_t> sum;
    int64_t n_tokens, stride;
    Acts(int64_t nt, int64_t k, int64_t k_pad)
        : q(static_cast<size_t>(nt * k_pad)), scale(nt, 1.0f), sum(nt, 0), n_tokens(nt),
          stride(k_pad) {
        for (int64_t t = 0; t < nt; ++t) {
            for (int64_t j = 0; j < k_pad; ++j) {
                const int8_t v = j < k ? static_cast<int8_t>(static_cast<int>(g_rng() % 255) - 127)
                                       : 0;
                q[t * k_pad + j] = v;
                sum[t] += v;
            }
        }
    }
    ActsI8 view(int64_t t0, int64_t nt) const {
        return ActsI8{q.data() + t0 * stride, scale.data() + t0, sum.data() + t0, nt, stride};
    }
};

// Seconds on the chosen clock: wall time, or the calling thread's CPU time (--clock thread: on a
// shared machine, time slices given to other processes do not count; memory and SMT contention
// still do).
double now_s(const Options& o) {
    if (o.thread_clock) {
        timespec ts{};
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
        return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
    }
    return std::chrono::duration<double>(Clock::now().time_since_epoch()).count();
}

// Runs fn(call_index) in samples of enough calls to last min_ms; median/min/max per call.
template <typename F>
void time_calls(const Options& o, F&& fn, Result* r) {
    // Warm up and calibrate: one call, then as many as fit in min_ms.
    const double t0 = now_s(o);
    fn(0);
    double one = now_s(o) - t0;
    int64_t calls = std::max<int64_t>(1, static_cast<int64_t>(o.min_ms * 1e-3 / std::max(one, 1e-9)));
    std::vector<double> per_call;
    int64_t index = 1;
    for (int rep = 0; rep < o.reps; ++rep) {
        const double s = now_s(o);
        for (int64_t c = 0; c < calls; ++c) fn(index++);
        per_call.push_back((now_s(o) - s) / static_cast<double>(calls));
    }
    std::sort(per_call.begin(), per_call.end());
    const size_t n = per_call.size();
    r->median_s = n % 2 ? per_call[n / 2] : 0.5 * (per_call[n / 2 - 1] + per_call[n / 2]);
    r->min_s = per_call.front();
    r->max_s = per_call.back();
    r->reps = o.reps;
    r->calls_per_sample = calls;
}

// Number of copies of a matrix of `bytes` that together exceed cold_mb (at least 1).
int64_t n_copies(const Options& o, int64_t bytes) {
    return std::max<int64_t>(1, (o.cold_mb << 20) / std::max<int64_t>(bytes, 1) + 1);
}

// Splits rows over the pool in parts whose bounds are multiples of granule.
template <typename F>
void parallel_rows(ThreadPool& pool, int64_t rows, int64_t granule, F&& f) {
    pool.run([&](int i, int n) {
        int64_t b = 0, e = 0;
        split_range(rows, granule, i, n, &b, &e);
        if (b < e) f(b, e);
    });
}

void print_header(const Options& o) {
    if (o.json) return;
    std::printf("| isa | family | model | matrix | rows x K | tokens | threads | time | GOP/s | GB/s | "
                "spread (min-max) |\n|---|---|---|---|---|---|---|---|---|---|---|\n");
}

void report(const Options& o, const Result& r, std::vector<Result>* all) {
    all->push_back(r);
    if (o.json) return;
    const double us = r.median_s * 1e6;
    std::printf("| %s | %s | %s | %s | %lldx%lld | %lld | %d | %.1f us | %.1f | %.2f | %.1f-%.1f us |\n",
                r.isa.c_str(), r.family.c_str(), r.model.c_str(), r.shape.c_str(),
                static_cast<long long>(r.rows), static_cast<long long>(r.k),
                static_cast<long long>(r.tokens), r.threads, us, r.ops / r.median_s * 1e-9,
                r.bytes / r.median_s * 1e-9, r.min_s * 1e6, r.max_s * 1e6);
    std::fflush(stdout);
}

// ---- memory read bandwidth ----------------------------------------------------------------

const char* g_membw_isa = "baseline";  // the probe variant used (membw.h)

struct BandwidthResult {
    int threads;
    double gbps_median, gbps_max;
};

std::vector<BandwidthResult> measure_bandwidth(const Options& o) {
    const int64_t n_words = (o.membw_mb << 20) / 8;
    AlignedBuffer<uint64_t> buf(static_cast<size_t>(n_words), true);
    for (int64_t i = 0; i < n_words; ++i) buf[i] = static_cast<uint64_t>(i);
    std::vector<BandwidthResult> out;
    volatile uint64_t sink = bench::sum_words(buf.data(), 0, &g_membw_isa);  // names the variant
    for (int nt : o.threads) {
        ThreadPool pool(nt);
        std::vector<uint64_t> partial(static_cast<size_t>(nt) * 8, 0);
        std::vector<double> gbps;
        for (int rep = 0; rep < std::max(3, o.reps) + 1; ++rep) {
            const auto s = Clock::now();
            pool.run([&](int i, int n) {
                int64_t b = 0, e = 0;
                split_range(n_words, 512, i, n, &b, &e);
                partial[static_cast<size_t>(i) * 8] = bench::sum_words(buf.data() + b, e - b, nullptr);
            });
            const double dt = std::chrono::duration<double>(Clock::now() - s).count();
            for (int i = 0; i < nt; ++i) sink = sink + partial[static_cast<size_t>(i) * 8];
            if (rep > 0) gbps.push_back(static_cast<double>(n_words * 8) / dt * 1e-9);  // rep 0 warms
        }
        std::sort(gbps.begin(), gbps.end());
        out.push_back({nt, gbps[gbps.size() / 2], gbps.back()});
    }
    (void)sink;
    return out;
}

// ---- the families -------------------------------------------------------------------------

void bench_quant(const Options& o, const KernelTable& kt, const Shape& s, std::vector<Result>* all) {
    // quantize_i8 of the K inputs of a BitLinear layer, one token at a time as the model does.
    if (s.output_layer) return;
    const int64_t k_pad = padded_k(s.k);
    for (int64_t nt : o.tokens) {
        if (std::strcmp(kt.isa, "ref") == 0 && nt > 1) continue;
        std::vector<float> x(static_cast<size_t>(nt * s.k));
        std::normal_distribution<float> nd(0.0f, 1.0f);
        for (float& v : x) v = nd(g_rng);
        AlignedBuffer<int8_t> q(static_cast<size_t>(nt * k_pad));
        std::vector<float> sc(nt);
        std::vector<int32_t> sum(nt);
        Result r{kt.isa, "quantize_i8", s.model, s.name, 1, s.k, nt, 1};
        r.ops = static_cast<double>(nt * s.k);  // "GOP/s" here: G values per second
        r.bytes = static_cast<double>(nt * s.k * 4);
        time_calls(o, [&](int64_t) {
            for (int64_t t = 0; t < nt; ++t)
                kt.quantize_i8(x.data() + t * s.k, s.k, k_pad, q.data() + t * k_pad, &sc[t], &sum[t]);
        }, &r);
        report(o, r, all);
    }
}

void bench_ternary(const Options& o, const KernelTable& kt, const Shape& s, bool lut,
                   std::vector<Result>* all) {
    if (s.output_layer) return;
    const int64_t k_pad = padded_k(s.k);
    const int64_t t2_bytes = s.rows * k_pad / 4;
    const int64_t n_tiles = (s.rows + kL2TileRows - 1) / kL2TileRows;
    const int64_t l2_bytes = n_tiles * 8 * k_pad;
    const int64_t bytes = lut ? l2_bytes : t2_bytes;
    const int64_t copies = n_copies(o, bytes);
    AlignedBuffer<uint8_t> t2(static_cast<size_t>(t2_bytes));
    fill_t2(t2.data(), static_cast<size_t>(t2_bytes));
    AlignedBuffer<uint8_t> w(static_cast<size_t>(bytes * copies), true);
    if (lut) {
        const T2Matrix m{t2.data(), s.rows, s.k, k_pad};
        pack_l2_from_t2(m, w.data());
    } else {
        std::memcpy(w.data(), t2.data(), static_cast<size_t>(t2_bytes));
    }
    for (int64_t c = 1; c < copies; ++c)
        std::memcpy(w.data() + c * bytes, w.data(), static_cast<size_t>(bytes));
    const bool is_ref = std::strcmp(kt.isa, "ref") == 0;
    for (int64_t nt : o.tokens) {
        if (is_ref && nt > 1) continue;
        Acts a(nt, s.k, k_pad);
        std::vector<int32_t> out(static_cast<size_t>(nt * s.rows));
        const int64_t tstride = lut_bytes(k_pad);
        AlignedBuffer<uint8_t> tables(static_cast<size_t>(nt * tstride));
        for (int th : o.threads) {
            if (is_ref && th > 1) continue;
            ThreadPool pool(th);
            const double ops = 2.0 * static_cast<double>(s.rows * s.k * nt);
            auto build = [&]() {
                // Tables of all tokens; tokens split over threads when there are enough.
                if (nt >= th) {
                    pool.run([&](int i, int n) {
                        int64_t b = 0, e = 0;
                        split_range(nt, 1, i, n, &b, &e);
                        if (b < e) kt.build_lut(a.view(b, e - b), k_pad, tables.data() + b * tstride);
                    });
                } else {
                    kt.build_lut(a.view(0, nt), k_pad, tables.data());
                }
            };
            if (!lut) {
                Result r{kt.isa, "mad", s.model, s.name, s.rows, s.k, nt, th};
                r.ops = ops;
                r.bytes = static_cast<double>(t2_bytes);
                const ActsI8 x = a.view(0, nt);
                time_calls(o, [&](int64_t call) {
                    const T2Matrix m{w.data() + (call % copies) * bytes, s.rows, s.k, k_pad};
                    parallel_rows(pool, s.rows, 32, [&](int64_t b, int64_t e) {
                        kt.gemm_t2(m, x, b, e, out.data() + b, s.rows);
                    });
                }, &r);
                report(o, r, all);
                continue;
            }
            build();
            const LutTables lt{tables.data(), nt, tstride};
            Result r{kt.isa, "lut", s.model, s.name, s.rows, s.k, nt, th};
            r.ops = ops;
            r.bytes = static_cast<double>(l2_bytes);
            time_calls(o, [&](int64_t call) {
                const L2Matrix m{w.data() + (call % copies) * bytes, s.rows, s.k, k_pad};
                parallel_rows(pool, s.rows, kL2TileRows, [&](int64_t b, int64_t e) {
                    kt.gemm_l2(m, lt, b, e, out.data() + b, s.rows);
                });
            }, &r);
            report(o, r, all);
            Result rb{kt.isa, "build_lut", s.model, s.name, 1, s.k, nt, th};
            rb.ops = static_cast<double>(nt * k_pad / 2 * 9);  // 9 table entries per column pair
            rb.bytes = static_cast<double>(nt * tstride);      // bytes of tables written
            time_calls(o, [&](int64_t) { build(); }, &rb);
            report(o, rb, all);
            Result rt = r;
            rt.family = "lut+build";
            rt.median_s = r.median_s + rb.median_s;
            rt.min_s = r.min_s + rb.min_s;
            rt.max_s = r.max_s + rb.max_s;
            report(o, rt, all);
        }
    }
}

// T3: the 1.67-bit layout (tables with a native gemm_t3 only). GB/s counts T3 bytes.
void bench_t3(const Options& o, const KernelTable& kt, const Shape& s, std::vector<Result>* all) {
    if (s.output_layer || !kt.native_t3) return;
    const int64_t k_pad = padded_k(s.k);
    const int64_t t2_bytes = s.rows * k_pad / 4;
    const int64_t bytes = t3_bytes(s.rows, s.k);
    const int64_t copies = n_copies(o, bytes);
    AlignedBuffer<uint8_t> t2(static_cast<size_t>(t2_bytes));
    fill_t2(t2.data(), static_cast<size_t>(t2_bytes));
    AlignedBuffer<uint8_t> w(static_cast<size_t>(bytes * copies), true);
    pack_t3_from_t2(T2Matrix{t2.data(), s.rows, s.k, k_pad}, w.data());
    for (int64_t c = 1; c < copies; ++c)
        std::memcpy(w.data() + c * bytes, w.data(), static_cast<size_t>(bytes));
    for (int64_t nt : o.tokens) {
        Acts a(nt, s.k, k_pad);
        std::vector<int32_t> out(static_cast<size_t>(nt * s.rows));
        for (int th : o.threads) {
            ThreadPool pool(th);
            Result r{kt.isa, "t3", s.model, s.name, s.rows, s.k, nt, th};
            r.ops = 2.0 * static_cast<double>(s.rows * s.k * nt);
            r.bytes = static_cast<double>(bytes);
            const ActsI8 x = a.view(0, nt);
            time_calls(o, [&](int64_t call) {
                const T3Matrix m{w.data() + (call % copies) * bytes, s.rows, s.k, padded_k3(s.k)};
                parallel_rows(pool, s.rows, kT3TileRows, [&](int64_t b, int64_t e) {
                    kt.gemm_t3(m, x, b, e, out.data() + b, s.rows);
                });
            }, &r);
            report(o, r, all);
        }
    }
}

void bench_b1(const Options& o, const KernelTable& kt, const Shape& s, std::vector<Result>* all) {
    if (s.output_layer) return;
    const int64_t k_pad = padded_k(s.k);
    const int64_t bytes = s.rows * k_pad / 8;
    const int64_t copies = n_copies(o, bytes);
    AlignedBuffer<uint8_t> w(static_cast<size_t>(bytes * copies), true);
    fill_bytes(w.data(), static_cast<size_t>(bytes));
    for (int64_t c = 1; c < copies; ++c)
        std::memcpy(w.data() + c * bytes, w.data(), static_cast<size_t>(bytes));
    const bool is_ref = std::strcmp(kt.isa, "ref") == 0;
    for (int64_t nt : o.tokens) {
        if (is_ref && nt > 1) continue;
        Acts a(nt, s.k, k_pad);
        std::vector<int32_t> out(static_cast<size_t>(nt * s.rows));
        for (int th : o.threads) {
            if (is_ref && th > 1) continue;
            ThreadPool pool(th);
            Result r{kt.isa, "b1", s.model, s.name, s.rows, s.k, nt, th};
            r.ops = 2.0 * static_cast<double>(s.rows * s.k * nt);
            r.bytes = static_cast<double>(bytes);
            const ActsI8 x = a.view(0, nt);
            time_calls(o, [&](int64_t call) {
                const B1Matrix m{w.data() + (call % copies) * bytes, s.rows, s.k, k_pad};
                parallel_rows(pool, s.rows, 32, [&](int64_t b, int64_t e) {
                    kt.gemm_b1(m, x, b, e, out.data() + b, s.rows);
                });
            }, &r);
            report(o, r, all);
        }
    }
}

void bench_q8(const Options& o, const KernelTable& kt, const Shape& s, std::vector<Result>* all) {
    if (!s.output_layer) return;
    const int64_t nb = s.k / kQ8Block;
    AlignedBuffer<int8_t> q(static_cast<size_t>(s.rows * s.k), true);  // one copy: beyond any cache
    for (int64_t i = 0; i < s.rows * s.k; ++i) q[i] = static_cast<int8_t>(static_cast<int>(g_rng() % 255) - 127);
    AlignedBuffer<float> d(static_cast<size_t>(s.rows * nb), true);
    for (size_t i = 0; i < d.size(); ++i) d[i] = 1e-3f * static_cast<float>(g_rng() % 1000 + 1);
    const Q8Matrix m{q.data(), d.data(), s.rows, s.k};
    const bool is_ref = std::strcmp(kt.isa, "ref") == 0;
    for (int64_t nt : o.tokens) {
        // The output layer runs for the last token only in decode and in a prompt (unless all
        // logits are wanted); 128 tokens are timed for completeness, not for ref.
        if (is_ref && nt > 1) continue;
        std::vector<float> x(static_cast<size_t>(nt * s.k));
        std::normal_distribution<float> nd(0.0f, 1.0f);
        for (float& v : x) v = nd(g_rng);
        AlignedBuffer<int8_t> xq(static_cast<size_t>(nt * s.k));
        std::vector<float> xd(static_cast<size_t>(nt * nb));
        for (int64_t t = 0; t < nt; ++t) kt.quantize_q8(x.data() + t * s.k, s.k, xq.data() + t * s.k, xd.data() + t * nb);
        const ActsQ8 xa{xq.data(), xd.data(), nt, s.k};
        std::vector<float> out(static_cast<size_t>(nt * s.rows));
        for (int th : o.threads) {
            if (is_ref && th > 1) continue;
            ThreadPool pool(th);
            Result r{kt.isa, "q8", s.model, s.name, s.rows, s.k, nt, th};
            r.ops = 2.0 * static_cast<double>(s.rows * s.k * nt);
            r.bytes = static_cast<double>(s.rows * s.k + s.rows * nb * 4);
            Options oq = o;
            oq.reps = std::min(o.reps, nt > 1 ? 3 : o.reps);
            time_calls(oq, [&](int64_t) {
                parallel_rows(pool, s.rows, 32, [&](int64_t b, int64_t e) {
                    kt.gemm_q8(m, xa, b, e, out.data() + b, s.rows);
                });
            }, &r);
            report(o, r, all);
        }
    }
}

// Which of MAD and LUT (with table building) is faster for each shape, tokens and threads.
void print_verdicts(const Options& o, const std::vector<Result>& all) {
    struct Row { std::string isa, model, shape; int64_t rows, k, tokens; int threads; double mad, lut, lut_build; };
    std::vector<Row> rows;
    for (const Result& r : all) {
        if (r.family != "mad") continue;
        Row row{r.isa, r.model, r.shape, r.rows, r.k, r.tokens, r.threads, r.median_s, 0, 0};
        for (const Result& l : all) {
            if (l.isa != r.isa || l.model != r.model || l.shape != r.shape || l.tokens != r.tokens ||
                l.threads != r.threads)
                continue;
            if (l.family == "lut") row.lut = l.median_s;
            if (l.family == "lut+build") row.lut_build = l.median_s;
        }
        if (row.lut > 0) rows.push_back(row);
    }
    if (rows.empty()) return;
    if (o.json) {
        std::printf(",\n  \"mad_vs_lut\": [");
        for (size_t i = 0; i < rows.size(); ++i) {
            const Row& r = rows[i];
            std::printf("%s\n    {\"isa\": \"%s\", \"model\": \"%s\", \"matrix\": \"%s\", \"rows\": %lld, "
                        "\"k\": %lld, \"tokens\": %lld, \"threads\": %d, \"mad_s\": %.9g, "
                        "\"lut_s\": %.9g, \"lut_build_s\": %.9g, \"winner\": \"%s\"}",
                        i ? "," : "", r.isa.c_str(), r.model.c_str(), r.shape.c_str(),
                        static_cast<long long>(r.rows), static_cast<long long>(r.k),
                        static_cast<long long>(r.tokens), r.threads, r.mad, r.lut, r.lut_build,
                        r.mad <= r.lut_build ? "mad" : "lut");
        }
        std::printf("\n  ]");
        return;
    }
    std::printf("\nMAD vs LUT (LUT time includes build_lut; lut/mad < 1 means LUT is faster)\n\n"
                "| isa | model | matrix | tokens | threads | mad | lut | lut+build | lut/mad | lut+build/mad | winner |\n"
                "|---|---|---|---|---|---|---|---|---|---|---|\n");
    for (const Row& r : rows) {
        std::printf("| %s | %s | %s | %lld | %d | %.1f us | %.1f us | %.1f us | %.2f | %.2f | %s |\n",
                    r.isa.c_str(), r.model.c_str(), r.shape.c_str(), static_cast<long long>(r.tokens),
                    r.threads, r.mad * 1e6, r.lut * 1e6, r.lut_build * 1e6, r.lut / r.mad,
                    r.lut_build / r.mad, r.mad <= r.lut_build ? "mad" : "lut");
    }
}

void usage() {
    std::fprintf(stderr,
                 "usage: kernel_bench [--isa ref,avx2,avx512,...] [--family quant,mad,lut,t3,b1,q8]\n"
                 "                    [--model 2b4t,large,3b] [--tokens 1,128] [--threads 1,2]\n"
                 "                    [--reps N] [--min-ms MS] [--cold-mb MB] [--membw-mb MB]\n"
                 "                    [--no-membw] [--membw-only] [--json] [--clock wall|thread]\n"
                 "  --clock thread: the calling thread's CPU time (needs --threads 1)\n");
}

bool parse(int argc, char** argv, Options* o) {
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        auto value = [&]() -> std::string {
            if (i + 1 >= argc) return std::string();
            return argv[++i];
        };
        try {
            if (a == "--isa") o->isas = split_csv(value());
            else if (a == "--family") o->families = split_csv(value());
            else if (a == "--model") o->models = split_csv(value());
            else if (a == "--tokens") {
                o->tokens.clear();
                for (const std::string& t : split_csv(value())) o->tokens.push_back(std::stoll(t));
            } else if (a == "--threads") {
                o->threads.clear();
                for (const std::string& t : split_csv(value())) o->threads.push_back(std::stoi(t));
            } else if (a == "--reps") o->reps = std::stoi(value());
            else if (a == "--min-ms") o->min_ms = std::stod(value());
            else if (a == "--cold-mb") o->cold_mb = std::stoll(value());
            else if (a == "--membw-mb") o->membw_mb = std::stoll(value());
            else if (a == "--no-membw") o->membw = false;
            else if (a == "--membw-only") o->membw_only = true;
            else if (a == "--json") o->json = true;
            else if (a == "--clock") {
                const std::string c = value();
                if (c != "wall" && c != "thread") return false;
                o->thread_clock = c == "thread";
            } else if (a == "-h" || a == "--help") return false;
            else {
                std::fprintf(stderr, "kernel_bench: unknown option %s\n", a.c_str());
                return false;
            }
        } catch (const std::exception&) {
            std::fprintf(stderr, "kernel_bench: bad value for %s\n", a.c_str());
            return false;
        }
    }
    for (int t : o->threads) if (t < 1) return false;
    if (o->thread_clock && (o->threads.size() != 1 || o->threads[0] != 1)) {
        std::fprintf(stderr, "kernel_bench: --clock thread measures one thread: use --threads 1\n");
        return false;
    }
    for (int64_t t : o->tokens) if (t < 1) return false;
    return o->reps >= 1 && !o->threads.empty() && !o->tokens.empty();
}

}  // namespace

int main(int argc, char** argv) {
    Options o;
    if (!parse(argc, argv, &o)) {
        usage();
        return 2;
    }
    std::vector<const KernelTable*> tables;
    for (const char* const* name = isa_names(); *name != nullptr; ++name) {
        const char* isa = *name;
        if (!o.isas.empty() && !contains(o.isas, isa)) continue;
        if (const KernelTable* kt = kernels_for(isa)) tables.push_back(kt);
    }
    const char* isa_list = "";
    std::string isas;
    for (const KernelTable* kt : tables) isas += std::string(isas.empty() ? "" : ",") + kt->isa;
    isa_list = isas.c_str();

    std::vector<BandwidthResult> bw;
    if (o.membw || o.membw_only) bw = measure_bandwidth(o);
    if (o.json) {
        std::printf("{\n  \"tool\": \"kernel_bench\",\n  \"active_isa\": \"%s\",\n  \"isas\": \"%s\",\n"
                    "  \"hardware_threads\": %d,\n  \"clock\": \"%s\",\n  \"membw\": [",
                    active_kernels().isa, isa_list, ThreadPool::hardware_threads(),
                    o.thread_clock ? "thread" : "wall");
        for (size_t i = 0; i < bw.size(); ++i)
            std::printf("%s{\"threads\": %d, \"read_gbps\": %.3f, \"read_gbps_max\": %.3f, "
                        "\"loads\": \"%s\"}",
                        i ? ", " : "", bw[i].threads, bw[i].gbps_median, bw[i].gbps_max,
                        g_membw_isa);
        std::printf("]");
    } else {
        std::printf("kernel_bench: ISAs %s (active %s), %d hardware threads, %s clock\n\n", isa_list,
                    active_kernels().isa, ThreadPool::hardware_threads(),
                    o.thread_clock ? "thread CPU-time" : "wall");
        if (!bw.empty()) {
            std::printf("memory read bandwidth (%lld MiB buffer, sums of 64-bit words, %s loads)\n\n"
                        "| threads | read GB/s (median) | max |\n|---|---|---|\n",
                        static_cast<long long>(o.membw_mb), g_membw_isa);
            for (const BandwidthResult& b : bw)
                std::printf("| %d | %.2f | %.2f |\n", b.threads, b.gbps_median, b.gbps_max);
            std::printf("\n");
        }
    }
    std::vector<Result> all;
    if (!o.membw_only) {
        print_header(o);
        for (const KernelTable* kt : tables) {
            for (const Shape& s : kShapes) {
                if (!contains(o.models, s.model)) continue;
                if (contains(o.families, "quant")) bench_quant(o, *kt, s, &all);
                if (contains(o.families, "mad")) bench_ternary(o, *kt, s, false, &all);
                if (contains(o.families, "lut")) bench_ternary(o, *kt, s, true, &all);
                if (contains(o.families, "t3")) bench_t3(o, *kt, s, &all);
                if (contains(o.families, "b1")) bench_b1(o, *kt, s, &all);
                if (contains(o.families, "q8")) bench_q8(o, *kt, s, &all);
            }
        }
    }
    if (o.json) {
        std::printf(",\n  \"results\": [");
        for (size_t i = 0; i < all.size(); ++i) {
            const Result& r = all[i];
            std::printf("%s\n    {\"isa\": \"%s\", \"family\": \"%s\", \"model\": \"%s\", \"matrix\": \"%s\", "
                        "\"rows\": %lld, \"k\": %lld, \"tokens\": %lld, \"threads\": %d, "
                        "\"median_s\": %.9g, \"min_s\": %.9g, \"max_s\": %.9g, \"gops\": %.4f, "
                        "\"gbps\": %.4f, \"reps\": %d, \"calls_per_sample\": %lld}",
                        i ? "," : "", r.isa.c_str(), r.family.c_str(), r.model.c_str(), r.shape.c_str(),
                        static_cast<long long>(r.rows), static_cast<long long>(r.k),
                        static_cast<long long>(r.tokens), r.threads, r.median_s, r.min_s, r.max_s,
                        r.ops / r.median_s * 1e-9, r.bytes / r.median_s * 1e-9, r.reps,
                        static_cast<long long>(r.calls_per_sample));
        }
        std::printf("\n  ]");
    }
    print_verdicts(o, all);
    if (o.json) std::printf("\n}\n");
    return 0;
}
