// Every kernel table this build and CPU have, compared with the scalar reference twins.
//
// Integer kernels must match exactly; float kernels within a stated bound. Shapes are awkward on
// purpose (1, 2, 3, 5, 7, 15, 17, 31, 33, ... rows; K from 1 to several blocks with tails), data
// adversarial (all -1/0/+1 weights, activations at -128/127, zero and NaN inputs), and buffers
// deliberately misaligned. Prints one line per failure and "N passed, N failed".
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu_features.h"
#include "kernels/kernels.h"

#include "check.h"

using namespace bitnet::kernels;
using namespace bitnet_test;

namespace {

std::mt19937 rng(1234);

// The value of fp16 bits (normal, subnormal, zero; the test data has no inf/NaN scales).
float fp16_value(uint16_t h) {
    const int e = (h >> 10) & 31;
    const int m = h & 1023;
    const float v = e == 0 ? std::ldexp(static_cast<float>(m), -24)
                           : std::ldexp(static_cast<float>(m + 1024), e - 25);
    return (h & 0x8000) ? -v : v;
}

enum class Fill { kRandom, kMinusOne, kZero, kPlusOne };
enum class ActFill { kRandom, kMin, kMax, kAlternating };

// A buffer whose data starts `offset` bytes past a 64-byte boundary.
template <typename T>
struct Misaligned {
    std::vector<unsigned char> storage;
    T* data;
    Misaligned(size_t n, size_t offset) : storage(n * sizeof(T) + 128) {
        auto base = reinterpret_cast<uintptr_t>(storage.data());
        base = (base + 63) / 64 * 64 + offset;
        data = reinterpret_cast<T*>(base);
    }
};

// Ternary codes (w+1) as a T2 matrix.
std::vector<uint8_t> make_t2(const std::vector<int8_t>& w, int64_t rows, int64_t k, int64_t k_pad) {
    std::vector<uint8_t> out(static_cast<size_t>(rows * k_pad / 4), 0);
    for (int64_t r = 0; r < rows; ++r) {
        for (int64_t j = 0; j < k_pad; ++j) {
            const int code = j < k ? w[r * k + j] + 1 : static_cast<int>(rng() % 3);
            const int64_t within = j % 128;
            out[r * k_pad / 4 + (j / 128) * 32 + within % 32] |=
                static_cast<uint8_t>(code << (2 * (within / 32)));
        }
    }
    return out;
}

std::vector<int8_t> make_weights(int64_t n, Fill fill) {
    std::vector<int8_t> w(static_cast<size_t>(n));
    for (auto& v : w) {
        switch (fill) {
            case Fill::kRandom: v = static_cast<int8_t>(static_cast<int>(rng() % 3) - 1); break;
            case Fill::kMinusOne: v = -1; break;
            case Fill::kZero: v = 0; break;
            case Fill::kPlusOne: v = 1; break;
        }
    }
    return w;
}

struct Acts {
    std::vector<int8_t> q;
    std::vector<float> scale;
    std::vector<int32_t> sum;
    int64_t stride;
    ActsI8 view() const {
        return {q.data(), scale.data(), sum.data(), static_cast<int64_t>(scale.size()), stride};
    }
};

Acts make_acts(int64_t n_tokens, int64_t k, int64_t stride, ActFill fill) {
    Acts a{std::vector<int8_t>(static_cast<size_t>(n_tokens * stride), 0),
           std::vector<float>(static_cast<size_t>(n_tokens), 1.0f),
           std::vector<int32_t>(static_cast<size_t>(n_tokens), 0), stride};
    for (int64_t t = 0; t < n_tokens; ++t) {
        int32_t s = 0;
        for (int64_t j = 0; j < k; ++j) {
            int v = 0;
            switch (fill) {
                case ActFill::kRandom: v = static_cast<int>(rng() % 256) - 128; break;
                case ActFill::kMin: v = -128; break;
                case ActFill::kMax: v = 127; break;
                case ActFill::kAlternating: v = (j % 2) ? 127 : -128; break;
            }
            a.q[t * stride + j] = static_cast<int8_t>(v);
            s += v;
        }
        a.sum[t] = s;
    }
    return a;
}

std::string shape_name(const char* isa, const char* op, int64_t rows, int64_t k, int64_t nt,
                       int fill, int act) {
    char buf[160];
    std::snprintf(buf, sizeof buf, "%s %s rows=%lld k=%lld tokens=%lld fill=%d act=%d", isa, op,
                  static_cast<long long>(rows), static_cast<long long>(k),
                  static_cast<long long>(nt), fill, act);
    return buf;
}

void test_ternary(const KernelTable& kt) {
    const int64_t row_counts[] = {1, 2, 3, 5, 7, 15, 17, 31, 32, 33, 63, 64, 65, 127, 129};
    const int64_t ks[] = {1, 3, 31, 127, 128, 129, 255, 256, 257, 640, 3200};
    // Small-N batches (2..17 tokens: several sequences decoding at once) and their tails.
    const int64_t token_counts[] = {1, 2, 3, 4, 5, 9, 1, 6, 8, 13, 16, 17};
    constexpr int kNumTokenCounts = sizeof(token_counts) / sizeof(token_counts[0]);
    const KernelTable& ref = reference_kernels();
    int iteration = 0;
    for (int64_t rows : row_counts) {
        for (int64_t k : ks) {
            const int64_t k_pad = padded_k(k);
            for (int fill = 0; fill < 4; ++fill) {
                for (int act = 0; act < 4; ++act) {
                    // Keep the sweep fast: all fills on small shapes, random data on the rest.
                    if (rows * k > 20000 && (fill != 0 || act != 0) && (fill + act) % 3 != 0) continue;
                    const int64_t nt = token_counts[iteration++ % kNumTokenCounts];
                    const auto w = make_weights(rows * k, static_cast<Fill>(fill));
                    const auto t2 = make_t2(w, rows, k, k_pad);
                    const int64_t stride = k_pad + 64 * (iteration % 2);
                    const Acts a = make_acts(nt, k, stride, static_cast<ActFill>(act));
                    const T2Matrix m{t2.data(), rows, k, k_pad};
                    std::vector<int32_t> want(static_cast<size_t>(nt * rows));
                    std::vector<int32_t> got(want.size(), -7);
                    ref.gemm_t2(m, a.view(), 0, rows, want.data(), rows);
                    // The reference against the plain statement of the math.
                    bool ref_ok = true;
                    for (int64_t t = 0; t < nt; ++t) {
                        for (int64_t r = 0; r < rows; ++r) {
                            int32_t s = 0;
                            for (int64_t j = 0; j < k; ++j) s += w[r * k + j] * a.q[t * stride + j];
                            ref_ok = ref_ok && s == want[t * rows + r];
                        }
                    }
                    check(ref_ok, shape_name("ref", "gemm_t2 vs math", rows, k, nt, fill, act));
                    kt.gemm_t2(m, a.view(), 0, rows, got.data(), rows);
                    check(got == want, shape_name(kt.isa, "gemm_t2", rows, k, nt, fill, act));

                    // A sub-range of rows with an output stride.
                    if (rows >= 3) {
                        const int64_t b = 1, e = rows - 1;
                        std::vector<int32_t> part(static_cast<size_t>(nt * (e - b + 2)), -7);
                        kt.gemm_t2(m, a.view(), b, e, part.data(), e - b + 2);
                        bool ok = true;
                        for (int64_t t = 0; t < nt; ++t) {
                            for (int64_t r = b; r < e; ++r) {
                                ok = ok && part[t * (e - b + 2) + r - b] == want[t * rows + r];
                            }
                        }
                        check(ok, shape_name(kt.isa, "gemm_t2 rows[1,n-1)", rows, k, nt, fill, act));
                    }

                    // LUT: repack to L2, build tables with both the reference and this table.
                    const int64_t n_tiles = (rows + kL2TileRows - 1) / kL2TileRows;
                    std::vector<uint8_t> l2(static_cast<size_t>(n_tiles * 8 * k_pad));
                    pack_l2_from_t2(m, l2.data());
                    const L2Matrix lm{l2.data(), rows, k, k_pad};
                    const int64_t tstride = lut_bytes(k_pad);
                    std::vector<uint8_t> tab_ref(static_cast<size_t>(nt * tstride));
                    Misaligned<uint8_t> tab(static_cast<size_t>(nt * tstride), iteration % 3);
                    ref.build_lut(a.view(), k_pad, tab_ref.data());
                    kt.build_lut(a.view(), k_pad, tab.data);
                    check(std::memcmp(tab_ref.data(), tab.data, tab_ref.size()) == 0,
                          shape_name(kt.isa, "build_lut", rows, k, nt, fill, act));
                    const LutTables lt{tab.data, nt, tstride};
                    std::vector<int32_t> lut_ref(want.size(), -7), lut_got(want.size(), -7);
                    ref.gemm_l2(lm, lt, 0, rows, lut_ref.data(), rows);
                    check(lut_ref == want, shape_name("ref", "gemm_l2 vs gemm_t2", rows, k, nt, fill, act));
                    kt.gemm_l2(lm, lt, 0, rows, lut_got.data(), rows);
                    check(lut_got == want, shape_name(kt.isa, "gemm_l2", rows, k, nt, fill, act));
                    if (rows > 32) {
                        std::vector<int32_t> part(static_cast<size_t>(nt * (rows - 32)), -7);
                        kt.gemm_l2(lm, lt, 32, rows, part.data(), rows - 32);
                        bool ok = true;
                        for (int64_t t = 0; t < nt; ++t) {
                            for (int64_t r = 32; r < rows; ++r) {
                                ok = ok && part[t * (rows - 32) + r - 32] == want[t * rows + r];
                            }
                        }
                        check(ok, shape_name(kt.isa, "gemm_l2 rows[32,n)", rows, k, nt, fill, act));
                    }

                    // T3 (1.67 bits): repacked from T2, activations read only below k.
                    std::vector<uint8_t> t3(static_cast<size_t>(t3_bytes(rows, k)));
                    pack_t3_from_t2(m, t3.data());
                    const T3Matrix tm{t3.data(), rows, k, padded_k3(k)};
                    std::vector<int32_t> t3_ref(want.size(), -7), t3_got(want.size(), -7);
                    ref.gemm_t3(tm, a.view(), 0, rows, t3_ref.data(), rows);
                    check(t3_ref == want, shape_name("ref", "gemm_t3 vs gemm_t2", rows, k, nt, fill, act));
                    kt.gemm_t3(tm, a.view(), 0, rows, t3_got.data(), rows);
                    check(t3_got == want, shape_name(kt.isa, "gemm_t3", rows, k, nt, fill, act));
                    if (rows > 32) {
                        std::vector<int32_t> part(static_cast<size_t>(nt * (rows - 32)), -7);
                        kt.gemm_t3(tm, a.view(), 32, rows, part.data(), rows - 32);
                        bool ok = true;
                        for (int64_t t = 0; t < nt; ++t) {
                            for (int64_t r = 32; r < rows; ++r) {
                                ok = ok && part[t * (rows - 32) + r - 32] == want[t * rows + r];
                            }
                        }
                        check(ok, shape_name(kt.isa, "gemm_t3 rows[32,n)", rows, k, nt, fill, act));
                    }
                }
            }
        }
    }
}

void test_binary(const KernelTable& kt) {
    const KernelTable& ref = reference_kernels();
    const int64_t row_counts[] = {1, 2, 3, 7, 17, 33};
    const int64_t ks[] = {1, 7, 31, 127, 128, 129, 256, 1000};
    int iteration = 0;
    for (int64_t rows : row_counts) {
        for (int64_t k : ks) {
            for (int act = 0; act < 4; ++act) {
                const int64_t k_pad = padded_k(k);
                const int64_t nt = 1 + iteration++ % 3;
                std::vector<uint8_t> bits(static_cast<size_t>(rows * k_pad / 8));
                for (auto& b : bits) b = static_cast<uint8_t>(act == 1 ? 0 : act == 2 ? 0xff : rng());
                const Acts a = make_acts(nt, k, k_pad, static_cast<ActFill>(act));
                const B1Matrix m{bits.data(), rows, k, k_pad};
                std::vector<int32_t> want(static_cast<size_t>(nt * rows)), got(want.size(), -7);
                ref.gemm_b1(m, a.view(), 0, rows, want.data(), rows);
                bool ref_ok = true;
                for (int64_t t = 0; t < nt; ++t) {
                    for (int64_t r = 0; r < rows; ++r) {
                        int32_t s = 0;
                        for (int64_t j = 0; j < k; ++j) {
                            const int bit = (bits[r * k_pad / 8 + j / 8] >> (j % 8)) & 1;
                            s += (bit ? 1 : -1) * a.q[t * k_pad + j];
                        }
                        ref_ok = ref_ok && s == want[t * rows + r];
                    }
                }
                check(ref_ok, shape_name("ref", "gemm_b1 vs math", rows, k, nt, 0, act));
                kt.gemm_b1(m, a.view(), 0, rows, got.data(), rows);
                check(got == want, shape_name(kt.isa, "gemm_b1", rows, k, nt, 0, act));
            }
        }
    }
}

std::vector<float> adversarial_floats(int64_t n, int kind) {
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::vector<float> x(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
        switch (kind) {
            case 0: x[i] = normal(rng); break;
            case 1: x[i] = 0.0f; break;
            case 2: x[i] = (i % 7 == 3) ? NAN : normal(rng) * 1e3f; break;
            case 3: x[i] = (i % 2 ? 1.0f : -1.0f) * (0.5f + static_cast<float>(i % 5)); break;  // ties
            default: x[i] = (i == n / 2) ? INFINITY : normal(rng) * 1e-7f; break;
        }
    }
    return x;
}

void test_quantize(const KernelTable& kt) {
    const KernelTable& ref = reference_kernels();
    const int64_t ns[] = {1, 2, 7, 8, 31, 32, 33, 100, 128, 2560, 6913};
    for (int64_t n : ns) {
        for (int kind = 0; kind < 5; ++kind) {
            const auto x = adversarial_floats(n, kind);
            const int64_t n_pad = padded_k(n);
            std::vector<int8_t> q0(static_cast<size_t>(n_pad), 5);
            Misaligned<int8_t> q1(static_cast<size_t>(n_pad), static_cast<size_t>(kind));
            std::memset(q1.data, 5, static_cast<size_t>(n_pad));
            float s0 = 0, s1 = 0;
            int32_t sum0 = 0, sum1 = 0;
            ref.quantize_i8(x.data(), n, n_pad, q0.data(), &s0, &sum0);
            kt.quantize_i8(x.data(), n, n_pad, q1.data, &s1, &sum1);
            const bool same = std::memcmp(q0.data(), q1.data, static_cast<size_t>(n_pad)) == 0 &&
                              std::memcmp(&s0, &s1, sizeof s0) == 0 && sum0 == sum1;
            check(same, shape_name(kt.isa, "quantize_i8", 1, n, 1, kind, 0));

            if (n % kQ8Block == 0) {
                std::vector<int8_t> a(static_cast<size_t>(n)), b(static_cast<size_t>(n));
                std::vector<float> da(static_cast<size_t>(n / 32)), db(da.size());
                ref.quantize_q8(x.data(), n, a.data(), da.data());
                kt.quantize_q8(x.data(), n, b.data(), db.data());
                check(a == b && std::memcmp(da.data(), db.data(), da.size() * 4) == 0,
                      shape_name(kt.isa, "quantize_q8", 1, n, 1, kind, 0));
            }
        }
    }
}

void test_q8_gemm(const KernelTable& kt) {
    const KernelTable& ref = reference_kernels();
    const int64_t row_counts[] = {1, 2, 3, 5, 33};
    // 1 .. 33 blocks: groups of 16 blocks with tails, odd block counts.
    const int64_t cols[] = {32, 64, 96, 544, 1056, 2560};
    const int64_t token_counts[] = {1, 2, 3, 4, 5, 9, 17};
    for (int64_t rows : row_counts) {
        for (int64_t n : cols) {
            for (int64_t nt : token_counts) {
                if (nt > 5 && rows * n > 20000) continue;
                const auto wf = adversarial_floats(rows * n, 0);
                const auto xf = adversarial_floats(nt * n, 0);
                std::vector<int8_t> wq(wf.size()), xq(xf.size());
                std::vector<float> wd(wf.size() / 32), xd(xf.size() / 32);
                for (int64_t r = 0; r < rows; ++r) ref.quantize_q8(&wf[r * n], n, &wq[r * n], &wd[r * n / 32]);
                for (int64_t t = 0; t < nt; ++t) ref.quantize_q8(&xf[t * n], n, &xq[t * n], &xd[t * n / 32]);
                const Q8Matrix m{wq.data(), wd.data(), rows, n};
                const ActsQ8 a{xq.data(), xd.data(), nt, n};
                std::vector<float> want(static_cast<size_t>(nt * rows)), got(want.size());
                ref.gemm_q8(m, a, 0, rows, want.data(), rows);
                kt.gemm_q8(m, a, 0, rows, got.data(), rows);
                bool ok = true;
                for (size_t i = 0; i < want.size(); ++i) {
                    // Reassociated float sum of n/32 products of magnitude <= 127*127*32*d_w*d_x.
                    const float bound = 1e-5f * static_cast<float>(n) + 1e-5f * std::fabs(want[i]);
                    ok = ok && std::fabs(want[i] - got[i]) <= bound;
                }
                check(ok, shape_name(kt.isa, "gemm_q8", rows, n, nt, 0, 0));
                // A row's value does not depend on the rows or tokens it is computed with (the
                // exact-top-k output layer recomputes single rows and relies on it).
                bool same = true;
                for (int64_t r = 0; r < rows; ++r) {
                    for (int64_t t = 0; t < nt; ++t) {
                        const ActsQ8 one{xq.data() + t * n, xd.data() + t * n / 32, 1, n};
                        float v = 0.0f;
                        kt.gemm_q8(m, one, r, r + 1, &v, 1);
                        same = same && std::memcmp(&v, &got[t * rows + r], 4) == 0;
                    }
                }
                check(same, shape_name(kt.isa, "gemm_q8 row independence", rows, n, nt, 0, 0));
            }
        }
    }
}

// The Q4H pre-pass (the exact-top-k output layer's 4-bit pass) against the reference, the
// reference against the math, and row independence.
void test_q4h(const KernelTable& kt) {
    const KernelTable& ref = reference_kernels();
    const int64_t row_counts[] = {1, 2, 3, 33};
    const int64_t cols[] = {32, 64, 96, 224, 544, 1056, 2560};
    const int64_t token_counts[] = {1, 2, 3, 5};
    for (int64_t rows : row_counts) {
        for (int64_t n : cols) {
            for (int64_t nt : token_counts) {
                const auto wf = adversarial_floats(rows * n, rows % 2 ? 0 : 3);
                const auto xf = adversarial_floats(nt * n, 0);
                std::vector<int8_t> wq(wf.size()), xq(xf.size());
                std::vector<float> wd(wf.size() / 32), xd(xf.size() / 32);
                for (int64_t r = 0; r < rows; ++r) ref.quantize_q8(&wf[r * n], n, &wq[r * n], &wd[r * n / 32]);
                for (int64_t t = 0; t < nt; ++t) ref.quantize_q8(&xf[t * n], n, &xq[t * n], &xd[t * n / 32]);
                std::vector<uint8_t> hi(static_cast<size_t>(rows * n / 2));
                std::vector<uint16_t> d16(wd.size());
                pack_q4h_from_q8(Q8Matrix{wq.data(), wd.data(), rows, n}, 0, rows, hi.data());
                ref.to_f16(wd.data(), d16.data(), static_cast<int64_t>(wd.size()));
                const Q4HMatrix m{hi.data(), d16.data(), rows, n};
                const ActsQ8 a{xq.data(), xd.data(), nt, n};
                std::vector<float> want(static_cast<size_t>(nt * rows)), got(want.size());
                ref.gemm_q4h(m, a, 0, rows, want.data(), rows);
                bool math_ok = true;
                for (int64_t t = 0; t < nt; ++t) {
                    for (int64_t r = 0; r < rows; ++r) {
                        double s = 0, mag = 0;
                        for (int64_t j = 0; j < n; ++j) {
                            const int h = (wq[r * n + j] + 128) >> 4;
                            const double w = static_cast<double>(fp16_value(d16[(r * n + j) / 32])) * (16 * h - 120);
                            const double x = static_cast<double>(xd[(t * n + j) / 32]) * xq[t * n + j];
                            s += w * x;
                            mag += std::fabs(w * x);
                        }
                        math_ok = math_ok && std::fabs(s - want[t * rows + r]) <= 1e-5 * mag + 1e-30;
                    }
                }
                check(math_ok, shape_name("ref", "gemm_q4h vs math", rows, n, nt, 0, 0));
                kt.gemm_q4h(m, a, 0, rows, got.data(), rows);
                bool ok = true;
                for (size_t i = 0; i < want.size(); ++i) {
                    ok = ok && std::fabs(want[i] - got[i]) <= 1e-5f * static_cast<float>(n) + 1e-5f * std::fabs(want[i]);
                }
                check(ok, shape_name(kt.isa, "gemm_q4h", rows, n, nt, 0, 0));
                bool same = true;
                for (int64_t r = 0; r < rows; ++r) {
                    for (int64_t t = 0; t < nt; ++t) {
                        const ActsQ8 one{xq.data() + t * n, xd.data() + t * n / 32, 1, n};
                        float v = 0.0f;
                        kt.gemm_q4h(m, one, r, r + 1, &v, 1);
                        same = same && std::memcmp(&v, &got[t * rows + r], 4) == 0;
                    }
                }
                check(same, shape_name(kt.isa, "gemm_q4h row independence", rows, n, nt, 0, 0));
            }
        }
    }
}

void test_float_ops(const KernelTable& kt) {
    const KernelTable& ref = reference_kernels();
    const int64_t ns[] = {1, 3, 8, 15, 16, 31, 64, 100, 128, 2560};
    for (int64_t n : ns) {
        const auto a = adversarial_floats(n, 0);
        const auto b = adversarial_floats(n, 0);
        std::vector<uint16_t> bh(static_cast<size_t>(n)), bh2(static_cast<size_t>(n));
        ref.to_f16(b.data(), bh.data(), n);
        kt.to_f16(b.data(), bh2.data(), n);
        check(bh == bh2, shape_name(kt.isa, "to_f16", 1, n, 1, 0, 0));
        std::vector<float> back0(static_cast<size_t>(n)), back1(static_cast<size_t>(n));
        ref.from_f16(bh.data(), back0.data(), n);
        kt.from_f16(bh.data(), back1.data(), n);
        check(back0 == back1, shape_name(kt.isa, "from_f16", 1, n, 1, 0, 0));

        float mag = 0.0f;
        for (int64_t i = 0; i < n; ++i) mag += std::fabs(a[i] * b[i]);
        const float bound = 1e-6f * mag * static_cast<float>(n > 8 ? 8 : n) + 1e-7f;
        check(std::fabs(ref.dot_f32(a.data(), b.data(), n) - kt.dot_f32(a.data(), b.data(), n)) <= bound,
              shape_name(kt.isa, "dot_f32", 1, n, 1, 0, 0));
        check(std::fabs(ref.dot_f16(a.data(), bh.data(), n) - kt.dot_f16(a.data(), bh.data(), n)) <= bound,
              shape_name(kt.isa, "dot_f16", 1, n, 1, 0, 0));

        std::vector<float> y0(b), y1(b), y2(b), y3(b);
        ref.axpy_f32(0.37f, a.data(), y0.data(), n);
        kt.axpy_f32(0.37f, a.data(), y1.data(), n);
        ref.axpy_f16(-1.5f, bh.data(), y2.data(), n);
        kt.axpy_f16(-1.5f, bh.data(), y3.data(), n);
        bool ok = true;
        for (int64_t i = 0; i < n; ++i) {
            ok = ok && std::fabs(y0[i] - y1[i]) <= 1e-6f * (std::fabs(y0[i]) + 1.0f);
            ok = ok && std::fabs(y2[i] - y3[i]) <= 1e-6f * (std::fabs(y2[i]) + 1.0f);
        }
        check(ok, shape_name(kt.isa, "axpy", 1, n, 1, 0, 0));

        std::vector<float> w = adversarial_floats(n, 0), o0(static_cast<size_t>(n)), o1(o0);
        ref.rms_norm(a.data(), w.data(), n, 1e-6f, o0.data());
        kt.rms_norm(a.data(), w.data(), n, 1e-6f, o1.data());
        ok = true;
        for (int64_t i = 0; i < n; ++i) ok = ok && std::fabs(o0[i] - o1[i]) <= 1e-6f * (std::fabs(o0[i]) + 1e-6f);
        check(ok, shape_name(kt.isa, "rms_norm", 1, n, 1, 0, 0));

        std::vector<float> s0(a), s1(a);
        ref.softmax(s0.data(), n);
        kt.softmax(s1.data(), n);
        ok = true;
        for (int64_t i = 0; i < n; ++i) ok = ok && std::fabs(s0[i] - s1[i]) <= 1e-6f;
        check(ok, shape_name(kt.isa, "softmax", 1, n, 1, 0, 0));
    }
}

// ---- attention over the KV cache (engine-core) --------------------------------------------------

// Cached rows of n positions in every KV type, from the same floats.
struct KvRows {
    std::vector<float> f32;
    std::vector<uint16_t> f16;
    std::vector<int8_t> q8;
    std::vector<uint16_t> q8_d;
};

KvRows make_rows(const std::vector<float>& x, int64_t n, int64_t hd) {
    const KernelTable& ref = reference_kernels();
    KvRows r{x, std::vector<uint16_t>(x.size()), {}, {}};
    ref.to_f16(x.data(), r.f16.data(), n * hd);
    if (hd % kQ8Block == 0) {
        r.q8.resize(x.size());
        r.q8_d.resize(x.size() / kQ8Block);
        std::vector<float> d(static_cast<size_t>(hd / kQ8Block));
        for (int64_t j = 0; j < n; ++j) {
            ref.quantize_q8(&x[j * hd], hd, &r.q8[j * hd], d.data());
            ref.to_f16(d.data(), &r.q8_d[j * hd / kQ8Block], hd / kQ8Block);
        }
    }
    return r;
}

std::string attn_name(const char* isa, const char* op, int64_t n_q, int64_t hd, int64_t n, int kind) {
    char buf[160];
    std::snprintf(buf, sizeof buf, "%s %s n_q=%lld hd=%lld n=%lld data=%d", isa, op,
                  static_cast<long long>(n_q), static_cast<long long>(hd), static_cast<long long>(n), kind);
    return buf;
}

// Scores: close to the reference, and invariant: every score is bit-identical when computed
// alone (one head, one row), and when the rows are passed in two runs.
void test_attn_scores(const KernelTable& kt) {
    const KernelTable& ref = reference_kernels();
    const int64_t hds[] = {8, 12, 32, 64, 128};
    const int64_t ns[] = {1, 2, 3, 7, 8, 9, 31, 33, 65, 257};
    const int64_t n_qs[] = {1, 2, 3, 4, 5, 8};
    for (int64_t hd : hds) {
        for (int64_t n : ns) {
            for (int64_t n_q : n_qs) {
                for (int kind = 0; kind < 3; ++kind) {
                    // kind 0: normal; 1: values at the fp16 extremes; 2: a NaN in one key row.
                    std::vector<float> q = adversarial_floats(n_q * hd, 0);
                    std::vector<float> kf = adversarial_floats(n * hd, 0);
                    if (kind == 1) {
                        for (size_t i = 0; i < kf.size(); i += 3) kf[i] = (i % 2 ? 65504.0f : -65504.0f);
                        for (auto& v : q) v *= 1e-4f;
                    }
                    const int64_t nan_row = n / 2;
                    if (kind == 2) kf[static_cast<size_t>(nan_row * hd + hd / 2)] = NAN;
                    const KvRows rows = make_rows(kf, n, hd);
                    const int64_t stride = n + 3;
                    std::vector<float> want(static_cast<size_t>(n_q * stride), 0.0f), got(want), part(want);
                    for (int type = 0; type < 3; ++type) {
                        if (type == 2 && (hd % kQ8Block != 0 || kind == 2)) continue;
                        std::vector<int8_t> qq(static_cast<size_t>(n_q * hd));
                        std::vector<float> qd(static_cast<size_t>(n_q * hd / kQ8Block + 1));
                        if (type == 2) ref.quantize_q8(q.data(), n_q * hd, qq.data(), qd.data());
                        const int64_t nb = hd / kQ8Block;
                        // Misaligned copies of the rows.
                        Misaligned<float> k32(rows.f32.size(), 4);
                        Misaligned<uint16_t> k16(rows.f16.size(), 2);
                        Misaligned<int8_t> k8(rows.q8.size() + 1, 1);
                        std::memcpy(k32.data, rows.f32.data(), rows.f32.size() * 4);
                        std::memcpy(k16.data, rows.f16.data(), rows.f16.size() * 2);
                        if (!rows.q8.empty()) std::memcpy(k8.data, rows.q8.data(), rows.q8.size());
                        auto run = [&](const KernelTable& t, int64_t h0, int64_t nh, int64_t j0, int64_t m, float* out) {
                            float* o = out + h0 * stride + j0;
                            // The prefetch hint names the rows themselves (any valid memory).
                            if (type == 0) {
                                t.attn_scores_f32(q.data() + h0 * hd, nh, hd, k32.data + j0 * hd, m, o, stride,
                                                  k32.data, n * hd * 4);
                            }
                            if (type == 1) {
                                t.attn_scores_f16(q.data() + h0 * hd, nh, hd, k16.data + j0 * hd, m, o, stride,
                                                  k16.data, n * hd * 2);
                            }
                            if (type == 2) {
                                t.attn_scores_q8(qq.data() + h0 * hd, qd.data() + h0 * nb, nh, hd, k8.data + j0 * hd,
                                                 rows.q8_d.data() + j0 * nb, m, o, stride, nullptr, 0);
                            }
                        };
                        run(ref, 0, n_q, 0, n, want.data());
                        run(kt, 0, n_q, 0, n, got.data());
                        bool close = true;
                        bool alone = true;
                        for (int64_t h = 0; h < n_q; ++h) {
                            for (int64_t j = 0; j < n; ++j) {
                                float mag = 0.0f;
                                for (int64_t i = 0; i < hd; ++i) mag += std::fabs(q[h * hd + i] * kf[j * hd + i]);
                                const float w = want[h * stride + j], g = got[h * stride + j];
                                // q8_0: the quantized inputs differ from kf by up to 1/254 of each
                                // block's max, so compare with the reference on the same quants.
                                const float bound = 2e-6f * static_cast<float>(hd) * mag + 1e-30f;
                                if (std::isnan(w) || std::isnan(g)) {
                                    close = close && std::isnan(w) && std::isnan(g);
                                } else {
                                    close = close && std::fabs(w - g) <= (type == 2 ? 1e-5f * std::fabs(w) + 1e-4f * mag : bound);
                                }
                                float one = 0.0f;
                                run(kt, h, 1, j, 1, part.data());
                                one = part[h * stride + j];
                                alone = alone && std::memcmp(&one, &g, sizeof g) == 0;
                            }
                        }
                        // Two runs: rows [0, a) then [a, n).
                        const int64_t a = n / 3;
                        if (a > 0) {
                            run(kt, 0, n_q, 0, a, part.data());
                            run(kt, 0, n_q, a, n - a, part.data());
                            for (int64_t h = 0; h < n_q; ++h) {
                                alone = alone && std::memcmp(&part[h * stride], &got[h * stride], n * 4) == 0;
                            }
                        }
                        const char* names[] = {"attn_scores_f32", "attn_scores_f16", "attn_scores_q8"};
                        check(close, attn_name(kt.isa, names[type], n_q, hd, n, kind));
                        check(alone, attn_name(kt.isa, names[type], n_q, hd, n, kind) + " (invariance)");
                    }
                }
            }
        }
    }
}

void test_attn_softmax(const KernelTable& kt) {
    const KernelTable& ref = reference_kernels();
    const int64_t ns[] = {1, 2, 7, 8, 9, 31, 33, 255, 256};
    for (int64_t n : ns) {
        for (int kind = 0; kind < 4; ++kind) {
            // 0: normal scores; 1: large spread (exp underflows to 0); 2: a NaN; 3: all equal.
            const int64_t n_q = 3, stride = n + 5;
            std::vector<float> s(static_cast<size_t>(n_q * stride), 0.0f);
            std::normal_distribution<float> normal(0.0f, kind == 1 ? 60.0f : 3.0f);
            for (auto& v : s) v = kind == 3 ? 0.25f : normal(rng);
            if (kind == 2) s[static_cast<size_t>(stride + n / 2)] = NAN;
            std::vector<float> s0(s), s1(s), m0(3), m1(3), l0(3), l1(3);
            ref.attn_softmax(s0.data(), n_q, n, stride, m0.data(), l0.data());
            kt.attn_softmax(s1.data(), n_q, n, stride, m1.data(), l1.data());
            bool ok = true;
            for (int64_t h = 0; h < n_q; ++h) {
                if (kind == 2 && h == 1) {
                    ok = ok && std::isnan(l0[1]) && std::isnan(l1[1]);
                    continue;
                }
                ok = ok && m0[h] == m1[h];
                ok = ok && std::fabs(l0[h] - l1[h]) <= 1e-6f * static_cast<float>(n) * l0[h];
                for (int64_t j = 0; j < n; ++j) {
                    const float a = s0[h * stride + j], b = s1[h * stride + j];
                    ok = ok && std::fabs(a - b) <= 4e-7f * a + 2e-38f;
                }
            }
            check(ok, attn_name(kt.isa, "attn_softmax", n_q, 0, n, kind));
        }
    }
}

// Accumulation: close to the reference, every element bit-identical whether the rows come in
// one run or two and whatever the number of heads beside it.
void test_attn_accum(const KernelTable& kt) {
    const KernelTable& ref = reference_kernels();
    const int64_t hds[] = {8, 12, 32, 40, 64, 128};
    const int64_t ns[] = {1, 2, 3, 31, 33, 64, 65, 129, 256};
    const int64_t n_qs[] = {1, 2, 3, 4, 5};
    std::uniform_real_distribution<float> unit(0.0f, 1.0f);
    for (int64_t hd : hds) {
        for (int64_t n : ns) {
            for (int64_t n_q : n_qs) {
                const std::vector<float> vf = adversarial_floats(n * hd, 0);
                const KvRows rows = make_rows(vf, n, hd);
                const int64_t p_stride = n + 1, o_stride = hd + 3;
                std::vector<float> p(static_cast<size_t>(n_q * p_stride));
                for (auto& w : p) w = unit(rng);
                const std::vector<float> o_init = adversarial_floats(n_q * o_stride, 0);
                for (int type = 0; type < 3; ++type) {
                    if (type == 2 && hd % kQ8Block != 0) continue;
                    const int64_t nb = hd / kQ8Block;
                    Misaligned<float> v32(rows.f32.size(), 4);
                    Misaligned<uint16_t> v16(rows.f16.size(), 2);
                    Misaligned<int8_t> v8(rows.q8.size() + 1, 3);
                    std::memcpy(v32.data, rows.f32.data(), rows.f32.size() * 4);
                    std::memcpy(v16.data, rows.f16.data(), rows.f16.size() * 2);
                    if (!rows.q8.empty()) std::memcpy(v8.data, rows.q8.data(), rows.q8.size());
                    auto run = [&](const KernelTable& t, int64_t h0, int64_t nh, int64_t j0, int64_t m, float* o) {
                        const float* ph = p.data() + h0 * p_stride + j0;
                        float* oh = o + h0 * o_stride;
                        if (type == 0) {
                            t.attn_accum_f32(ph, p_stride, nh, hd, v32.data + j0 * hd, m, oh, o_stride, nullptr, 0);
                        }
                        if (type == 1) {
                            t.attn_accum_f16(ph, p_stride, nh, hd, v16.data + j0 * hd, m, oh, o_stride, v16.data,
                                             n * hd * 2);
                        }
                        if (type == 2) {
                            t.attn_accum_q8(ph, p_stride, nh, hd, v8.data + j0 * hd, rows.q8_d.data() + j0 * nb, m, oh,
                                            o_stride, v8.data, n * hd);
                        }
                    };
                    std::vector<float> want(o_init), got(o_init), split(o_init), single(o_init);
                    run(ref, 0, n_q, 0, n, want.data());
                    run(kt, 0, n_q, 0, n, got.data());
                    const int64_t a = (n + 1) / 2;
                    run(kt, 0, n_q, 0, a, split.data());
                    if (n > a) run(kt, 0, n_q, a, n - a, split.data());
                    for (int64_t h = 0; h < n_q; ++h) run(kt, h, 1, 0, n, single.data());
                    bool close = true;
                    for (int64_t h = 0; h < n_q; ++h) {
                        for (int64_t i = 0; i < hd; ++i) {
                            float mag = std::fabs(o_init[h * o_stride + i]);
                            for (int64_t j = 0; j < n; ++j) mag += std::fabs(p[h * p_stride + j] * vf[j * hd + i]);
                            const float bound = 4e-7f * static_cast<float>(n + 1) * mag + 1e-30f;
                            close = close && std::fabs(want[h * o_stride + i] - got[h * o_stride + i]) <= bound;
                        }
                    }
                    const char* names[] = {"attn_accum_f32", "attn_accum_f16", "attn_accum_q8"};
                    check(close, attn_name(kt.isa, names[type], n_q, hd, n, 0));
                    check(split == got && single == got, attn_name(kt.isa, names[type], n_q, hd, n, 0) + " (invariance)");
                }
            }
        }
    }
}


// The AVX-512 levels compute avx2's attention numbers bit for bit (the VNNI q8_0 scores, the
// 16-lane softmax and q8_0 accumulation keep avx2's operations per element), so that every x86
// level decodes alike. Raw q8_0 rows here: quants at the extremes of [-127, 127], zero,
// subnormal and largest fp16 scales; 1 to 12 heads (the VNNI kernel takes heads four at a time
// and hands the rest to the level below), runs of rows around its groups of 4.
void test_attn_levels_agree(const KernelTable& kt, const KernelTable& avx2) {
    const int64_t hds[] = {32, 64, 96, 128, 256};
    const int64_t ns[] = {1, 2, 3, 4, 5, 7, 8, 9, 31, 32, 33, 64, 65, 257};
    const int64_t n_qs[] = {1, 3, 4, 5, 8, 9, 12};
    std::uniform_int_distribution<int> quant(-127, 127);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    for (int64_t hd : hds) {
        const int64_t nb = hd / kQ8Block;
        for (int64_t n : ns) {
            for (int64_t n_q : n_qs) {
                for (int kind = 0; kind < 3; ++kind) {
                    // kind 0: random quants and scales; 1: quants at +-127 (q and k of opposite
                    // signs: the largest block dots), scales 0 / subnormal / 65504 / random;
                    // 2: quants 0 and 127 mixed.
                    Misaligned<int8_t> k(static_cast<size_t>(n * hd), 3), v(static_cast<size_t>(n * hd), 1);
                    std::vector<uint16_t> kd(static_cast<size_t>(n * nb)), vd(kd.size());
                    std::vector<int8_t> q(static_cast<size_t>(n_q * hd));
                    std::vector<float> qd(static_cast<size_t>(n_q * nb));
                    for (int64_t i = 0; i < n * hd; ++i) {
                        const int r = quant(rng);
                        k.data[i] = static_cast<int8_t>(kind == 0 ? r : kind == 1 ? -127 : (r > 0 ? 127 : 0));
                        v.data[i] = static_cast<int8_t>(kind == 1 ? (i % 2 ? 127 : -127) : quant(rng));
                    }
                    for (int64_t i = 0; i < n_q * hd; ++i) {
                        q[static_cast<size_t>(i)] = static_cast<int8_t>(kind == 1 ? 127 : quant(rng));
                    }
                    const uint16_t special[] = {0x0000, 0x0001, 0x7bff, 0x2e66};
                    for (size_t i = 0; i < kd.size(); ++i) {
                        kd[i] = kind == 1 ? special[i % 4] : static_cast<uint16_t>(0x2000 + rng() % 0x1800);
                        vd[i] = kind == 1 ? special[(i + 1) % 4] : static_cast<uint16_t>(0x2000 + rng() % 0x1800);
                    }
                    for (auto& d : qd) d = std::fabs(normal(rng)) * 0.01f;
                    const int64_t stride = n + 3;
                    std::vector<float> s_want(static_cast<size_t>(n_q * stride), 0.0f), s_got(s_want);
                    avx2.attn_scores_q8(q.data(), qd.data(), n_q, hd, k.data, kd.data(), n, s_want.data(), stride,
                                        k.data, n * hd);
                    kt.attn_scores_q8(q.data(), qd.data(), n_q, hd, k.data, kd.data(), n, s_got.data(), stride,
                                      k.data, n * hd);
                    check(std::memcmp(s_want.data(), s_got.data(), s_want.size() * 4) == 0,
                          attn_name(kt.isa, "attn_scores_q8 == avx2", n_q, hd, n, kind));

                    // Softmax of these scores (scaled to a useful range), then the V sums.
                    for (auto& x : s_want) x *= 1e-3f;
                    std::vector<float> p_want(s_want), p_got(s_want), m0(static_cast<size_t>(n_q)), m1(m0), l0(m0), l1(m0);
                    avx2.attn_softmax(p_want.data(), n_q, n, stride, m0.data(), l0.data());
                    kt.attn_softmax(p_got.data(), n_q, n, stride, m1.data(), l1.data());
                    check(p_want == p_got && m0 == m1 && l0 == l1, attn_name(kt.isa, "attn_softmax == avx2", n_q, hd, n, kind));

                    const int64_t o_stride = hd + 5;
                    const std::vector<float> o_init = adversarial_floats(n_q * o_stride, 0);
                    std::vector<float> o_want(o_init), o_got(o_init);
                    avx2.attn_accum_q8(p_want.data(), stride, n_q, hd, v.data, vd.data(), n, o_want.data(), o_stride,
                                       v.data, n * hd);
                    kt.attn_accum_q8(p_want.data(), stride, n_q, hd, v.data, vd.data(), n, o_got.data(), o_stride,
                                     v.data, n * hd);
                    check(std::memcmp(o_want.data(), o_got.data(), o_want.size() * 4) == 0,
                          attn_name(kt.isa, "attn_accum_q8 == avx2", n_q, hd, n, kind));
                }
            }
        }
    }
    // The float kernels: the avx2 ones on every AVX-512 level.
    check(kt.attn_scores_f32 == avx2.attn_scores_f32 && kt.attn_scores_f16 == avx2.attn_scores_f16 &&
              kt.attn_accum_f32 == avx2.attn_accum_f32 && kt.attn_accum_f16 == avx2.attn_accum_f16,
          std::string(kt.isa) + " float attention kernels are avx2's");
}

}  // namespace

int main() {
    std::printf("cpu: %s (%s); active kernels: %s\n", cpu_features().brand.c_str(),
                cpu_features().summary().c_str(), active_kernels().isa);
    int n_tables = 0;
    for (const char* const* name = isa_names(); *name != nullptr; ++name) {
        const KernelTable* kt = kernels_for(*name);
        if (kt == nullptr) continue;
        ++n_tables;
        std::printf("testing %s\n", kt->isa);
        test_quantize(*kt);
        test_ternary(*kt);
        test_binary(*kt);
        test_q8_gemm(*kt);
        test_q4h(*kt);
        test_float_ops(*kt);
        test_attn_scores(*kt);
        test_attn_softmax(*kt);
        test_attn_accum(*kt);
        const KernelTable* avx2 = kernels_for("avx2");
        if (avx2 != nullptr && std::strncmp(kt->isa, "avx512", 6) == 0) test_attn_levels_agree(*kt, *avx2);
    }
    const char* forced = std::getenv("BITNET_EXPECT_ISA");
    if (forced != nullptr) check(kernels_for(forced) != nullptr, std::string("expected ISA ") + forced);
    std::printf("%d tables; %d passed, %d failed\n", n_tables, g_passed, g_failed);
    return g_failed == 0 ? 0 : 1;
}
