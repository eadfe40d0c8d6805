// The batched draw (sample_rows) on a thread pool against each Sampler drawing alone: the same
// tokens and log-probabilities, rows with and without masks, penalties and alternatives, and a
// failing row reported without stopping the others. Run by ctest, so the sanitizer build covers
// the threaded sampler.
#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "model/sampler.h"
#include "runtime/thread_pool.h"

#include "check.h"

using namespace bitnet;
using namespace bitnet_test;

namespace {

SamplerParams params_of(int i) {
    SamplerParams p;
    p.temperature = i % 4 == 0 ? 0.0f : 0.5f + 0.25f * static_cast<float>(i % 3);
    p.top_k = i % 2 ? 0 : 20;
    p.top_p = i % 3 ? 1.0f : 0.9f;
    p.min_p = i % 5 ? 0.0f : 0.05f;
    p.repeat_penalty = i % 2 ? 1.3f : 1.0f;
    p.presence_penalty = i % 3 ? 0.5f : 0.0f;
    p.frequency_penalty = i % 4 ? 0.25f : 0.0f;
    p.seed = 1000 + static_cast<uint64_t>(i);
    return p;
}

}  // namespace

int main() {
    const int64_t n_vocab = 5000;
    const int n_rows = 9;
    std::mt19937 rng(7);
    std::normal_distribution<float> normal(0.0f, 3.0f);
    std::vector<float> logits(static_cast<size_t>(n_rows * n_vocab));
    std::vector<uint8_t> mask(static_cast<size_t>(n_vocab));
    for (auto& m : mask) m = rng() % 3 != 0;

    for (int n_threads : {1, 2, 4}) {
        ThreadPool pool(n_threads);
        std::vector<Sampler> alone;
        std::vector<Sampler> batched;
        for (int i = 0; i < n_rows; ++i) {
            alone.emplace_back(n_vocab, params_of(i));
            batched.emplace_back(n_vocab, params_of(i));
        }
        for (int step = 0; step < 20; ++step) {
            for (auto& l : logits) l = normal(rng);
            std::vector<SampleRow> rows(static_cast<size_t>(n_rows));
            for (int i = 0; i < n_rows; ++i) {
                SampleRow& r = rows[static_cast<size_t>(i)];
                r.sampler = &batched[static_cast<size_t>(i)];
                r.logits = logits.data() + i * n_vocab;
                r.allowed = i % 2 ? mask.data() : nullptr;
                r.n_top = i % 3 == 0 ? -1 : i;
            }
            sample_rows(rows.data(), n_rows, &pool);
            for (int i = 0; i < n_rows; ++i) {
                const SampleRow& r = rows[static_cast<size_t>(i)];
                Sampler& s = alone[static_cast<size_t>(i)];
                TokenLogprobs lp;
                const int32_t t = s.sample(r.logits, r.allowed, r.n_top >= 0 ? &lp : nullptr,
                                           std::max<int64_t>(r.n_top, 0));
                const std::string where = "threads " + std::to_string(n_threads) + " step " +
                                          std::to_string(step) + " row " + std::to_string(i);
                check(t == r.token, where + ": token");
                check(r.error.empty(), where + ": no error");
                if (r.allowed != nullptr) check(mask[static_cast<size_t>(t)] != 0, where + ": mask");
                if (r.n_top >= 0) {
                    check(lp.logprob == r.logprobs.logprob && std::isfinite(lp.logprob),
                          where + ": logprob");
                    check(lp.top_ids == r.logprobs.top_ids &&
                              static_cast<int64_t>(lp.top_ids.size()) == r.n_top,
                          where + ": alternatives");
                }
                s.accept(t);
                batched[static_cast<size_t>(i)].accept(r.token);
            }
        }
        // A row with every token masked fails alone; the other rows are still drawn.
        std::vector<uint8_t> none(static_cast<size_t>(n_vocab), 0);
        std::vector<SampleRow> rows(2);
        rows[0].sampler = &batched[1];
        rows[0].logits = logits.data();
        rows[1].sampler = &batched[2];
        rows[1].logits = logits.data() + n_vocab;
        rows[1].allowed = none.data();
        bool threw = false;
        try {
            sample_rows(rows.data(), 2, &pool);
        } catch (const ShapeError& e) {
            threw = std::string(e.what()).find("row 1") != std::string::npos;
        }
        check(threw, "all-masked row raises ShapeError naming row 1");
        check(rows[0].token >= 0 && rows[0].error.empty(), "the other row was drawn");
        // Without throwing, the failed row reports its error and the other is drawn.
        rows[0].token = rows[1].token = -7;
        sample_rows(rows.data(), 2, &pool, /*throw_on_error=*/false);
        check(rows[0].token >= 0 && rows[0].error.empty() && rows[1].token == -1 &&
                  !rows[1].error.empty(),
              "throw_on_error = false records the failed row");
    }

    // Exact-top-k rows: a sampler that sees only the forced (penalized) tokens and the eligible
    // tokens at or above the k-th largest exact, the rest -inf, draws what it draws from the
    // full row (model/sampler.h).
    for (int i = 0; i < 12; ++i) {
        SamplerParams p = params_of(i);
        if (p.top_k == 0 && p.temperature > 0.0f) p.top_k = 1 + 13 * i;  // top-k rows need top_k
        Sampler full(n_vocab, p), topk(n_vocab, p);
        const int64_t k = p.temperature > 0.0f ? p.top_k : 1;
        std::vector<float> row(static_cast<size_t>(n_vocab));
        std::vector<float> sorted;
        int same = 0;
        for (int step = 0; step < 60; ++step) {
            for (auto& l : logits) l = normal(rng);
            const uint8_t* allowed = i % 3 == 1 ? mask.data() : nullptr;
            std::vector<uint8_t> forced(static_cast<size_t>(n_vocab), 0);
            for (int32_t t : full.penalized_tokens()) forced[static_cast<size_t>(t)] = 1;
            sorted.clear();
            for (int64_t j = 0; j < n_vocab; ++j) {
                if (!forced[static_cast<size_t>(j)] && (allowed == nullptr || allowed[j])) {
                    sorted.push_back(logits[static_cast<size_t>(j)]);
                }
            }
            std::sort(sorted.begin(), sorted.end(), std::greater<float>());
            const float kth = sorted[static_cast<size_t>(std::min<int64_t>(k, sorted.size()) - 1)];
            for (int64_t j = 0; j < n_vocab; ++j) {
                const float l = logits[static_cast<size_t>(j)];
                const bool keep = forced[static_cast<size_t>(j)] || l >= kth || rng() % 50 == 0;
                row[static_cast<size_t>(j)] = keep ? l : -std::numeric_limits<float>::infinity();
            }
            const int32_t a = full.sample(logits.data(), allowed);
            const int32_t b = topk.sample(row.data(), allowed);
            same += a == b;
            full.accept(a);
            topk.accept(b);
        }
        check(same == 60, "top-k rows draw the full rows' tokens, params " + std::to_string(i));
    }
    std::printf("%d passed, %d failed\n", g_passed, g_failed);
    return g_failed == 0 ? 0 : 1;
}
