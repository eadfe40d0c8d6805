// The exact-top-k output layer (output_topk.h): build of the 4-bit pre-pass with its per-row
// bounds, and the top-k selection with exact recomputation.
//
// The bound. For a row r with Q8 weights w_j = d_b q_j (block b of column j) and pre-pass weights
// v_j = h_b (16 hi_j - 120), h_b = fp16(d_b), and quantized activations x^_j = e_b p_j, the exact
// real values are L = w . x^ and A = v . x^, so |L - A| <= ||w - v|| ||x^|| (Cauchy-Schwarz). The
// kernels compute each block term with two float roundings and then sum the n_b terms in some
// order (SIMD twins reassociate; AVX2's gemm_q8 adds lane partials with FMA): any such evaluation
// is within (n_b + 5) u sum_j |w_j x^_j| <= (n_b + 5) u ||w|| ||x^|| of the real value, u = 2^-24,
// and likewise for A with ||v||. So with
//     c_r = (||w - v|| + (n_b + 4) 2^-23 (||w|| + ||v||)) (1 + 2^-20)
// (norms in double from exact products, the last factor covering their own rounding, then rounded
// up to float), |L_computed - A_computed| <= c_r ||x^|| for every x^. ||x^|| is computed in double
// and inflated by (1 + 2^-20); lower and upper bounds are formed in double.
#include "model/output_topk.h"

#include <algorithm>
#include <cmath>
#include <exception>
#include <functional>
#include <limits>
#include <queue>

#include "model/weights.h"

namespace bitnet {
namespace {

constexpr double kSlack = 1.0 + 1.0 / (1 << 20);
constexpr int64_t kRowGranule = 64;

// pool.run for bodies that may throw (allocations): the pool does not carry exceptions, so each
// thread keeps its own and the first is rethrown on the calling thread.
template <typename F>
void run_catching(ThreadPool& pool, F&& body) {
    std::vector<std::exception_ptr> errors(static_cast<size_t>(pool.n_threads()));
    pool.run([&](int ith, int nth) {
        try {
            body(ith, nth);
        } catch (...) {
            errors[static_cast<size_t>(ith)] = std::current_exception();
        }
    });
    for (const std::exception_ptr& e : errors) {
        if (e) std::rethrow_exception(e);
    }
}

}  // namespace

int64_t TopKOutput::pass_bytes() const {
    return static_cast<int64_t>(hi.size() + 2 * d.size() + 4 * bound.size());
}

TopKOutput TopKOutput::build(const Q8Output& q8, const kernels::KernelTable& kt, ThreadPool& pool) {
    TopKOutput out;
    out.n_rows = q8.n_rows;
    out.n_cols = q8.n_cols;
    const int64_t nb = q8.n_cols / kernels::kQ8Block;
    out.hi = AlignedBuffer<uint8_t>(static_cast<size_t>(q8.n_rows * q8.n_cols / 2), true);
    out.d = AlignedBuffer<uint16_t>(static_cast<size_t>(q8.n_rows * nb), true);
    out.bound.assign(static_cast<size_t>(q8.n_rows), 0.0f);
    const double gamma = static_cast<double>(nb + 4) * std::ldexp(1.0, -23);
    run_catching(pool, [&](int ith, int nth) {
        int64_t b = 0, e = 0;
        split_range(q8.n_rows, kRowGranule, ith, nth, &b, &e);
        if (b >= e) return;
        kernels::pack_q4h_from_q8(q8.view(), b, e, out.hi.data() + b * (q8.n_cols / 2));
        kt.to_f16(q8.d.data() + b * nb, out.d.data() + b * nb, (e - b) * nb);
        std::vector<float> h(static_cast<size_t>(nb));
        for (int64_t r = b; r < e; ++r) {
            kt.from_f16(out.d.data() + r * nb, h.data(), nb);
            const int8_t* q = q8.q.data() + r * q8.n_cols;
            double diff = 0, ww = 0, vv = 0;
            for (int64_t j = 0; j < q8.n_cols; ++j) {
                const int64_t blk = j / kernels::kQ8Block;
                const double w = static_cast<double>(q8.d[static_cast<size_t>(r * nb + blk)]) * q[j];
                const double v = static_cast<double>(h[static_cast<size_t>(blk)]) * (16 * ((q[j] + 128) >> 4) - 120);
                diff += (w - v) * (w - v);
                ww += w * w;
                vv += v * v;
            }
            const double c = (std::sqrt(diff) + gamma * (std::sqrt(ww) + std::sqrt(vv))) * kSlack;
            float cf = static_cast<float>(c);
            if (static_cast<double>(cf) < c) cf = std::nextafter(cf, std::numeric_limits<float>::infinity());
            out.bound[static_cast<size_t>(r)] = std::isfinite(cf) ? cf : std::numeric_limits<float>::infinity();
        }
    });
    return out;
}

void topk_logits(const Q8Output& q8, const TopKOutput& pre, const kernels::KernelTable& kt,
                 ThreadPool& pool, const kernels::ActsQ8& x, const TopKRequest* req, float* logits,
                 TopKStats* stats) {
    const int64_t n_vocab = pre.n_rows;
    const int64_t nb = pre.n_cols / kernels::kQ8Block;
    constexpr float kNegInf = -std::numeric_limits<float>::infinity();
    // 1. The pre-pass logits of every token, written where the results go.
    run_catching(pool, [&](int ith, int nth) {
        int64_t b = 0, e = 0;
        split_range(n_vocab, kRowGranule, ith, nth, &b, &e);
        if (b < e) kt.gemm_q4h(pre.view(), x, b, e, logits + b, n_vocab);
    });
    const int n_threads = pool.n_threads();
    std::vector<std::vector<double>> top(static_cast<size_t>(n_threads));
    std::vector<uint8_t> forced(static_cast<size_t>(n_vocab), 0);
    for (int64_t t = 0; t < x.n_tokens; ++t) {
        const TopKRequest& rq = req[t];
        const int64_t k = std::max<int64_t>(rq.k, 1);
        float* row = logits + t * n_vocab;
        // ||x^|| of this token, an upper bound.
        double sq = 0;
        for (int64_t j = 0; j < pre.n_cols; ++j) {
            const double v = static_cast<double>(x.d[t * nb + j / kernels::kQ8Block]) * x.q[t * pre.n_cols + j];
            sq += v * v;
        }
        const double x_norm = std::sqrt(sq) * kSlack;
        for (int64_t i = 0; i < rq.n_forced; ++i) {
            if (rq.forced[i] >= 0 && rq.forced[i] < n_vocab) forced[static_cast<size_t>(rq.forced[i])] = 1;
        }
        auto eligible = [&](int64_t r) {
            return !forced[static_cast<size_t>(r)] && (rq.allowed == nullptr || rq.allowed[r] != 0);
        };
        // 2. tau: the k-th largest lower bound over the eligible rows (per thread, then merged).
        run_catching(pool, [&](int ith, int nth) {
            int64_t b = 0, e = 0;
            split_range(n_vocab, kRowGranule, ith, nth, &b, &e);
            std::priority_queue<double, std::vector<double>, std::greater<double>> heap;
            for (int64_t r = b; r < e; ++r) {
                if (!eligible(r)) continue;
                const double lower = static_cast<double>(row[r]) - static_cast<double>(pre.bound[static_cast<size_t>(r)]) * x_norm;
                if (std::isnan(lower)) continue;  // such a row is a candidate (below)
                if (static_cast<int64_t>(heap.size()) < k) {
                    heap.push(lower);
                } else if (lower > heap.top()) {
                    heap.pop();
                    heap.push(lower);
                }
            }
            std::vector<double>& mine = top[static_cast<size_t>(ith)];
            mine.clear();
            while (!heap.empty()) {
                mine.push_back(heap.top());
                heap.pop();
            }
        });
        std::vector<double> all;
        for (const auto& v : top) all.insert(all.end(), v.begin(), v.end());
        double tau = -std::numeric_limits<double>::infinity();
        if (static_cast<int64_t>(all.size()) >= k && std::isfinite(x_norm)) {
            std::nth_element(all.begin(), all.begin() + (k - 1), all.end(), std::greater<double>());
            tau = all[static_cast<size_t>(k - 1)];
        }
        // 3. Candidates (upper bound >= tau, or NaN) and forced rows: exact; the rest: -inf.
        std::vector<int64_t> counts(static_cast<size_t>(n_threads), 0);
        run_catching(pool, [&](int ith, int nth) {
            int64_t b = 0, e = 0;
            split_range(n_vocab, kRowGranule, ith, nth, &b, &e);
            std::vector<int32_t> rows;
            for (int64_t r = b; r < e; ++r) {
                const bool f = forced[static_cast<size_t>(r)] != 0;
                bool take = f;
                if (!f && eligible(r)) {
                    const double upper = static_cast<double>(row[r]) + static_cast<double>(pre.bound[static_cast<size_t>(r)]) * x_norm;
                    take = !(upper < tau);  // NaN: take
                }
                if (take) rows.push_back(static_cast<int32_t>(r));
            }
            const kernels::ActsQ8 one{x.q + t * pre.n_cols, x.d + t * nb, 1, pre.n_cols};
            // gemm_q8's value of a row does not depend on the rows it is computed with
            // (tests/cpp/test_kernels.cpp checks it for every table): row by row for a few
            // candidates, the whole range (streamed faster) when they are most of it.
            if (2 * static_cast<int64_t>(rows.size()) > e - b) {
                std::vector<uint8_t> keep(static_cast<size_t>(e - b), 0);
                for (int32_t r : rows) keep[static_cast<size_t>(r - b)] = 1;
                kt.gemm_q8(q8.view(), one, b, e, row + b, n_vocab);
                for (int64_t r = b; r < e; ++r) {
                    if (!keep[static_cast<size_t>(r - b)]) row[r] = kNegInf;
                }
            } else {
                std::vector<float> exact(rows.size());
                for (size_t i = 0; i < rows.size(); ++i) kt.gemm_q8(q8.view(), one, rows[i], rows[i] + 1, &exact[i], 1);
                for (int64_t r = b; r < e; ++r) row[r] = kNegInf;
                for (size_t i = 0; i < rows.size(); ++i) row[rows[i]] = exact[i];
            }
            counts[static_cast<size_t>(ith)] = static_cast<int64_t>(rows.size());
        });
        for (int64_t i = 0; i < rq.n_forced; ++i) {
            if (rq.forced[i] >= 0 && rq.forced[i] < n_vocab) forced[static_cast<size_t>(rq.forced[i])] = 0;
        }
        if (stats != nullptr) {
            stats[t].n_exact = 0;
            for (int64_t c : counts) stats[t].n_exact += c;
        }
    }
}

}  // namespace bitnet
