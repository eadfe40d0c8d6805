// Token sampling: penalties, mask, log-probabilities, temperature, top-k, top-p, min-p
// (see sampler.h).
#include "model/sampler.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <limits>

#include "core/error.h"

namespace bitnet {

namespace {

// Top-p histogram: bins of z_max - z (a log-probability gap) of width 1/kBinsPerNat, the last
// bin open-ended. exp(-kMaxGap) ~ 1e-14 is below anything top-p can tell apart.
constexpr int kBinsPerNat = 32;
constexpr int kMaxGap = 32;
constexpr int kBins = kBinsPerNat * kMaxGap + 1;

// The bin of a candidate: monotone in z (never smaller for a smaller z), so "bin <= b" selects a
// prefix of the candidates in descending order.
inline int bin_of(float z, float z_max) {
    const float gap = (z_max - z) * static_cast<float>(kBinsPerNat);
    return gap < static_cast<float>(kBins - 1) ? static_cast<int>(gap) : kBins - 1;
}

}  // namespace

Sampler::Sampler(int64_t n_vocab, const SamplerParams& params)
    : n_vocab_(n_vocab), params_(params) {
    const SamplerParams& p = params_;
    BITNET_CHECK(n_vocab >= 1 && n_vocab <= INT32_MAX, ShapeError, "n_vocab ", n_vocab,
                 " is out of range");
    BITNET_CHECK(!std::isnan(p.temperature), ShapeError, "temperature is NaN");
    BITNET_CHECK(p.top_p > 0.0f && p.top_p <= 1.0f, ShapeError, "top_p must be in (0, 1], got ",
                 p.top_p);
    BITNET_CHECK(p.min_p >= 0.0f && p.min_p <= 1.0f, ShapeError, "min_p must be in [0, 1], got ",
                 p.min_p);
    BITNET_CHECK(p.repeat_penalty > 0.0f && std::isfinite(p.repeat_penalty), ShapeError,
                 "repeat_penalty must be a positive number, got ", p.repeat_penalty);
    BITNET_CHECK(p.repeat_last_n >= 0, ShapeError, "repeat_last_n must be >= 0, got ",
                 p.repeat_last_n);
    BITNET_CHECK(std::isfinite(p.presence_penalty), ShapeError,
                 "presence_penalty must be a finite number, got ", p.presence_penalty);
    BITNET_CHECK(std::isfinite(p.frequency_penalty), ShapeError,
                 "frequency_penalty must be a finite number, got ", p.frequency_penalty);
    history_.resize(static_cast<size_t>(p.repeat_last_n));
    stamp_.assign(static_cast<size_t>(n_vocab), 0);
    count_.assign(static_cast<size_t>(n_vocab), 0);
    cand_.resize(static_cast<size_t>(n_vocab));
    weight_.resize(static_cast<size_t>(n_vocab));
    bin_mass_.resize(kBins);
    rng_.seed(p.seed);
}

void Sampler::reset(uint64_t seed) {
    params_.seed = seed;
    rng_.seed(seed);
    history_next_ = 0;
    history_size_ = 0;
    for (const int32_t id : counted_) count_[static_cast<size_t>(id)] = 0;
    counted_.clear();
}

void Sampler::accept(int32_t token, bool generated) {
    BITNET_CHECK(token >= 0 && token < n_vocab_, ShapeError, "token id ", token,
                 " is out of range [0, ", n_vocab_, ")");
    if (generated && count_[static_cast<size_t>(token)]++ == 0) counted_.push_back(token);
    if (params_.repeat_last_n == 0) return;
    history_[static_cast<size_t>(history_next_)] = token;
    history_next_ = (history_next_ + 1) % params_.repeat_last_n;
    history_size_ = std::min(history_size_ + 1, params_.repeat_last_n);
}

std::vector<int32_t> Sampler::penalized_tokens() const {
    std::vector<int32_t> out;
    if (params_.repeat_penalty != 1.0f) {
        out.assign(history_.begin(), history_.begin() + history_size_);
    }
    if (params_.frequency_penalty != 0.0f || params_.presence_penalty != 0.0f) {
        out.insert(out.end(), counted_.begin(), counted_.end());
    }
    std::sort(out.begin(), out.end());
    out.erase(std::unique(out.begin(), out.end()), out.end());
    return out;
}

double Sampler::uniform() {
    // The top 53 bits of one 64-bit draw, scaled into [0, 1).
    return static_cast<double>(rng_() >> 11) * (1.0 / 9007199254740992.0);
}

void Sampler::load(const float* logits, const uint8_t* allowed) {
    // NaN never wins and never gets probability; +inf is clamped so that z - z_max stays finite.
    auto clean = [](float l) {
        if (std::isnan(l)) return -std::numeric_limits<float>::infinity();
        return l == std::numeric_limits<float>::infinity() ? FLT_MAX : l;
    };
    for (int64_t i = 0; i < n_vocab_; ++i) {
        cand_[static_cast<size_t>(i)] = {clean(logits[i]), static_cast<int32_t>(i)};
    }
    // Step 1: only the tokens in the window or generated before differ from the plain values;
    // each is recomputed from its logit once, the penalties in a fixed order (HF's repetition
    // penalty, then OpenAI's frequency and presence penalties, as vLLM applies them).
    const float penalty = params_.repeat_penalty;
    const bool repetition = penalty != 1.0f && history_size_ > 0;
    const bool counts = !counted_.empty() &&
                        (params_.frequency_penalty != 0.0f || params_.presence_penalty != 0.0f);
    if (repetition || counts) {
        if (stamp_now_ > UINT32_MAX - 2) {  // the stamps would wrap around: start over
            std::fill(stamp_.begin(), stamp_.end(), 0u);
            stamp_now_ = 0;
        }
        const uint32_t in_window = ++stamp_now_;
        const uint32_t done = ++stamp_now_;
        if (repetition) {
            for (int64_t i = 0; i < history_size_; ++i) {
                stamp_[static_cast<size_t>(history_[static_cast<size_t>(i)])] = in_window;
            }
        }
        auto penalize = [&](int32_t token) {
            const auto id = static_cast<size_t>(token);
            if (stamp_[id] == done) return;  // each distinct token is penalized once
            const bool windowed = stamp_[id] == in_window;
            stamp_[id] = done;
            float l = clean(logits[id]);
            if (windowed) l = l > 0.0f ? l / penalty : l * penalty;
            if (count_[id] > 0) {
                l -= params_.frequency_penalty * static_cast<float>(count_[id]);
                l -= params_.presence_penalty;
            }
            // A penalty can overflow (a repeat_penalty below 1): keep z finite, like +inf logits.
            cand_[id].z = l == std::numeric_limits<float>::infinity() ? FLT_MAX : l;
        };
        if (repetition) {
            for (int64_t i = 0; i < history_size_; ++i) penalize(history_[static_cast<size_t>(i)]);
        }
        if (counts) {
            for (const int32_t token : counted_) penalize(token);
        }
    }
    if (allowed != nullptr) {
        for (int64_t i = 0; i < n_vocab_; ++i) {
            if (allowed[i] == 0) cand_[static_cast<size_t>(i)].z = -std::numeric_limits<float>::infinity();
        }
    }
}

void Sampler::logprobs(TokenLogprobs* out, int64_t n_top) {
    constexpr float kNegInf = -std::numeric_limits<float>::infinity();
    float z_max = kNegInf;
    for (const Candidate& c : cand_) z_max = std::max(z_max, c.z);
    BITNET_CHECK(z_max != kNegInf, ShapeError,
                 "cannot sample: every logit is NaN, -inf or masked out");
    pen_.resize(static_cast<size_t>(n_vocab_));
    double sum = 0.0;
    for (int64_t i = 0; i < n_vocab_; ++i) {
        const float z = cand_[static_cast<size_t>(i)].z;
        pen_[static_cast<size_t>(i)] = z;
        sum += std::exp(static_cast<double>(z) - static_cast<double>(z_max));
    }
    pen_lse_ = static_cast<double>(z_max) + std::log(sum);
    out->logprob = 0.0f;
    out->top_ids.clear();
    out->top_logprobs.clear();
    const int64_t k = std::min(n_top, n_vocab_);
    if (k <= 0) return;
    // The k best in a heap whose top is the worst held (as select_top_k), without moving cand_.
    auto worse = [](const Candidate& a, const Candidate& b) { return before(a, b); };
    heap_.clear();
    for (const Candidate& c : cand_) {
        if (c.z == kNegInf) continue;  // probability 0: never listed
        if (static_cast<int64_t>(heap_.size()) < k) {
            heap_.push_back(c);
            std::push_heap(heap_.begin(), heap_.end(), worse);
        } else if (before(c, heap_.front())) {
            std::pop_heap(heap_.begin(), heap_.end(), worse);
            heap_.back() = c;
            std::push_heap(heap_.begin(), heap_.end(), worse);
        }
    }
    std::sort(heap_.begin(), heap_.end(), before);
    for (const Candidate& c : heap_) {
        out->top_ids.push_back(c.id);
        out->top_logprobs.push_back(static_cast<float>(static_cast<double>(c.z) - pen_lse_));
    }
}

int32_t Sampler::argmax() const {
    const Candidate* best = &cand_[0];
    for (const Candidate& c : cand_) {
        if (before(c, *best)) best = &c;
    }
    BITNET_CHECK(best->z != -std::numeric_limits<float>::infinity(), ShapeError,
                 "cannot sample: every logit is NaN, -inf or masked out");
    return best->id;
}

void Sampler::select_top_k(int64_t k) {
    // k much smaller than the vocabulary: one pass with a heap of the k best (its worst on top)
    // that most candidates fail to enter with a single comparison.
    if (k * 16 <= n_vocab_) {
        // With `before` as the heap's "less", its top is the worst candidate held.
        auto worse = [](const Candidate& a, const Candidate& b) { return before(a, b); };
        heap_.clear();
        for (const Candidate& c : cand_) {
            if (static_cast<int64_t>(heap_.size()) < k) {
                heap_.push_back(c);
                std::push_heap(heap_.begin(), heap_.end(), worse);
            } else if (before(c, heap_.front())) {
                std::pop_heap(heap_.begin(), heap_.end(), worse);
                heap_.back() = c;
                std::push_heap(heap_.begin(), heap_.end(), worse);
            }
        }
        std::copy(heap_.begin(), heap_.end(), cand_.begin());
    } else {
        std::nth_element(cand_.begin(), cand_.begin() + k, cand_.end(), before);
    }
}

void Sampler::filter(float inv_temperature, bool sorted) {
    const auto begin = cand_.begin();
    // Step 3, top-k, on the step-1 values: the k best move to the front, sorted. Selecting
    // before the temperature is applied, and sorting what is kept, makes the rest of the draw a
    // function of the k best values alone: every token outside them may be anything below them
    // (-inf included, as the exact-top-k output layer leaves them) without changing the token
    // drawn. (Scaling by 1/T can round two different logits to one value; selected after it,
    // such a pair would be ordered by id instead of by logit.)
    int64_t n = n_vocab_;
    if (params_.top_k > 0 && params_.top_k < n) {
        n = params_.top_k;
        select_top_k(n);
        std::sort(begin, begin + n, before);
    }
    // Step 2, temperature, on what is left: z * (1/T), rounded exactly as load() would.
    if (inv_temperature != 1.0f) {
        for (int64_t i = 0; i < n; ++i) {
            const float z = cand_[static_cast<size_t>(i)].z * inv_temperature;
            cand_[static_cast<size_t>(i)].z = z == std::numeric_limits<float>::infinity() ? FLT_MAX : z;
        }
    }
    float z_max = -std::numeric_limits<float>::infinity();
    for (int64_t i = 0; i < n; ++i) z_max = std::max(z_max, cand_[static_cast<size_t>(i)].z);
    BITNET_CHECK(z_max != -std::numeric_limits<float>::infinity(), ShapeError,
                 "cannot sample: every logit is NaN, -inf or masked out");
    auto weight = [z_max](const Candidate& c) { return static_cast<double>(std::exp(c.z - z_max)); };

    // The normalizer of the top-k set (top-p is measured against it) and, for top-p, the mass
    // in each bin of log-probability gap.
    const bool top_p = params_.top_p < 1.0f;
    double total = 0.0;
    if (top_p) {
        std::fill(bin_mass_.begin(), bin_mass_.end(), 0.0);
        for (int64_t i = 0; i < n; ++i) {
            const double w = weight(cand_[i]);
            total += w;
            bin_mass_[bin_of(cand_[i].z, z_max)] += w;
        }
    }

    // Step 5, min-p, done first because it is a threshold: p_i >= min_p * p_max  <=>
    // z_i >= z_max + log(min_p). Tokens of probability 0 go too. What is left is a prefix of the
    // top-k set in descending order, so cutting it before top-p gives the same final set.
    const double floor_z = params_.min_p > 0.0f
                               ? z_max + std::log(static_cast<double>(params_.min_p))
                               : -std::numeric_limits<double>::infinity();
    const auto kept_end = std::partition(begin, begin + n, [floor_z](const Candidate& c) {
        return c.z != -std::numeric_limits<float>::infinity() && c.z >= floor_z;
    });
    const int64_t n_min_p = kept_end - begin;

    // Step 4, top-p. Let b be the first bin where the cumulative mass reaches top_p. Every token
    // in an earlier bin has less than top_p above it and is kept; no token after bin b is
    // reached. Only bin b needs sorting to find the cut. (Should rounding leave the walk short
    // of the target, it goes on through the rest, sorted a growing prefix at a time.)
    n_kept_ = n_min_p;
    if (top_p) {
        const double target = static_cast<double>(params_.top_p) * total;
        int last_bin = kBins - 1;
        double mass = 0.0;
        for (int b = 0; b < kBins; ++b) {
            mass += bin_mass_[b];
            if (mass >= target) {
                last_bin = b;
                break;
            }
        }
        const auto sure_end = std::partition(begin, kept_end, [&](const Candidate& c) {
            return bin_of(c.z, z_max) < last_bin;
        });
        const auto bin_end = std::partition(sure_end, kept_end, [&](const Candidate& c) {
            return bin_of(c.z, z_max) == last_bin;
        });
        double above = 0.0;  // mass of the tokens ranked above the current one
        for (auto it = begin; it != sure_end; ++it) above += weight(*it);
        int64_t done = sure_end - begin;  // cand_[0 .. done) is kept; from done on, walked in order
        int64_t chunk = bin_end - begin;
        bool cut = false;
        while (!cut && done < n_min_p) {
            if (chunk > bin_end - begin && chunk < n_min_p) {
                std::nth_element(begin + done, begin + chunk, kept_end, before);
            }
            std::sort(begin + done, begin + chunk, before);
            for (int64_t i = done; i < chunk; ++i) {
                if (above >= target) {
                    n_kept_ = i;
                    cut = true;
                    break;
                }
                above += weight(cand_[i]);
            }
            done = chunk;
            chunk = std::min(n_min_p, std::max<int64_t>(chunk * 4, 64));
        }
    }
    if (sorted) std::sort(begin, begin + n_kept_, before);

    kept_mass_ = 0.0;
    for (int64_t i = 0; i < n_kept_; ++i) {
        weight_[i] = weight(cand_[i]);
        kept_mass_ += weight_[i];
    }
}

int32_t Sampler::sample(const float* logits, const uint8_t* allowed, TokenLogprobs* out,
                       int64_t n_top) {
    const bool greedy = !(params_.temperature > 0.0f);
    const float inv_temperature = greedy ? 1.0f : 1.0f / params_.temperature;
    int32_t token = 0;
    // The step-1 values (for the log-probabilities and top-k); filter() applies the temperature.
    load(logits, allowed);
    if (out == nullptr) {
        if (greedy) return argmax();
    } else {
        logprobs(out, n_top);
        if (greedy) {
            token = argmax();
            out->logprob = static_cast<float>(static_cast<double>(pen_[static_cast<size_t>(token)]) - pen_lse_);
            return token;
        }
    }
    filter(inv_temperature, /*sorted=*/false);
    const double u = uniform() * kept_mass_;
    double acc = 0.0;
    token = cand_[n_kept_ - 1].id;  // u rounded up to the total
    for (int64_t i = 0; i < n_kept_; ++i) {
        acc += weight_[i];
        if (u < acc) {
            token = cand_[i].id;
            break;
        }
    }
    if (out != nullptr) {
        out->logprob = static_cast<float>(static_cast<double>(pen_[static_cast<size_t>(token)]) - pen_lse_);
    }
    return token;
}

void Sampler::distribution(const float* logits, std::vector<int32_t>* ids,
                           std::vector<double>* probs, const uint8_t* allowed) {
    ids->clear();
    probs->clear();
    load(logits, allowed);
    if (!(params_.temperature > 0.0f)) {
        ids->push_back(argmax());
        probs->push_back(1.0);
        return;
    }
    filter(1.0f / params_.temperature, /*sorted=*/true);
    for (int64_t i = 0; i < n_kept_; ++i) {
        ids->push_back(cand_[i].id);
        probs->push_back(weight_[i] / kept_mass_);
    }
}

void sample_rows(SampleRow* rows, int64_t n, ThreadPool* pool, bool throw_on_error) {
    auto run = [rows](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) {
            SampleRow& r = rows[i];
            r.error.clear();
            try {
                r.token = r.sampler->sample(r.logits, r.allowed,
                                            r.n_top >= 0 ? &r.logprobs : nullptr,
                                            std::max<int64_t>(r.n_top, 0));
            } catch (const std::exception& e) {  // thread pool tasks must not throw
                r.token = -1;
                r.error = e.what();
            }
        }
    };
    if (pool == nullptr || pool->n_threads() == 1 || n < 2) {
        run(0, n);
    } else {
        pool->run([&](int part, int n_parts) {
            int64_t begin = 0;
            int64_t end = 0;
            split_range(n, 1, part, n_parts, &begin, &end);
            run(begin, end);
        });
    }
    for (int64_t i = 0; i < n && throw_on_error; ++i) {
        BITNET_CHECK(rows[i].error.empty(), ShapeError, "row ", i, ": ", rows[i].error);
    }
}

}  // namespace bitnet
