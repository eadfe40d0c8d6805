// Sampler: picks the next token from a row of logits.
//
// The steps, in the order Hugging Face transformers applies its logits processors and warpers
// (so a configuration means the same thing in both), with OpenAI's penalties after HF's:
//   1. penalties: each distinct token among the last repeat_last_n accepted tokens has its logit
//      divided by repeat_penalty when positive, multiplied when negative (Hugging Face's
//      repetition penalty); then each token generated so far (accepted with generated = true)
//      loses frequency_penalty * count + presence_penalty (OpenAI's, as vLLM applies them);
//      then tokens a constraint disallows (a mask) get -inf. Log-probabilities are taken here:
//      log_softmax of the penalized, masked logits, before temperature and truncation;
//   2. temperature: z = logit / temperature. temperature <= 0 means greedy: the largest
//      penalized logit, ties to the lowest id, and steps 3-6 are skipped;
//   3. top-k: keep the top_k largest penalized logits (exactly k; ties broken by the lower id;
//      selected before the division by the temperature, which is monotone, so this is the top_k
//      largest z except where rounding makes two different logits one z). top_k <= 0 or
//      >= n_vocab keeps all;
//   4. top-p: over the top-k set, renormalized, keep the smallest prefix in descending
//      probability whose mass reaches top_p (a token is kept while the mass ranked above it is
//      below top_p). top_p >= 1 keeps all;
//   5. min-p: keep tokens whose probability is at least min_p times the largest one;
//   6. draw one token from what is left, renormalized.
//
// Cost (n = n_vocab): a few O(n) passes and a sort of the kept prefix only. Top-k selects with a
// heap of k (or nth_element for large k); top-p builds a histogram of probability mass over
// log-probability bins: tokens in the bins before the one where the mass reaches top_p are kept
// unsorted, and only that one bin is sorted to find the cut; min-p is one partition. Nothing
// sorts the whole vocabulary (distribution(), for tests, sorts what it returns). On one core of
// the development machine a 128k vocabulary takes about 0.4 ms with top-k 40 and 1-2 ms with
// top-p alone, against tens of milliseconds for the forward pass of a 2B model.
//
// Exact-top-k rows (model/output_topk.h): with top_k > 0 (or greedy), the token drawn depends only
// on the values of the top_k largest penalized, allowed logits (the greedy case: the largest),
// never on the values below them: the kept set is sorted before anything else reads it. So a
// row in which only those (and the penalized tokens, see penalized_tokens()) are exact and the
// rest are -inf gives the same token, log-probabilities aside, as the full row.
//
// Determinism: the generator is std::mt19937_64 (its output sequence is fixed by the C++
// standard) turned into doubles by bit manipulation, not by std::uniform_real_distribution
// (whose algorithm is implementation-defined): a seed, the same logits and the same accepted
// history give the same token on every platform and compiler.
//
// Thread safety: a Sampler holds a generator and a history; use one per generation. It never
// touches its inputs. sample() throws ShapeError when every logit is NaN or -inf.
//
// Example:
//     bitnet::SamplerParams p;
//     p.temperature = 0.7f; p.top_k = 40; p.top_p = 0.9f; p.seed = 42;
//     bitnet::Sampler sampler(n_vocab, p);
//     int32_t token = sampler.sample(logits);   // logits: (n_vocab) floats
//     sampler.accept(token);                    // enters the penalty window and counts
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "runtime/thread_pool.h"

namespace bitnet {

struct SamplerParams {
    float temperature = 0.8f;    // <= 0: greedy
    int64_t top_k = 40;          // <= 0: off
    float top_p = 0.95f;         // in (0, 1]; 1: off
    float min_p = 0.05f;         // in [0, 1]; 0: off
    float repeat_penalty = 1.0f; // > 0; 1: off
    int64_t repeat_last_n = 64;  // window of accepted tokens the penalty looks at; 0: off
    float presence_penalty = 0.0f;   // finite; 0: off (OpenAI: -2 to 2)
    float frequency_penalty = 0.0f;  // finite; 0: off (OpenAI: -2 to 2)
    uint64_t seed = 0;
};

// What sample() can report about the token it picked, from the step-1 distribution.
struct TokenLogprobs {
    float logprob = 0.0f;              // log-probability of the sampled token
    std::vector<int32_t> top_ids;      // the n_top likeliest tokens, descending (ties by id)
    std::vector<float> top_logprobs;   // their log-probabilities
};

class Sampler {
 public:
    // Throws ShapeError for n_vocab < 1 or parameters out of range (top_p outside (0, 1], min_p
    // outside [0, 1], repeat_penalty <= 0, repeat_last_n < 0, NaN or infinite penalties, NaN
    // anywhere).
    Sampler(int64_t n_vocab, const SamplerParams& params);

    const SamplerParams& params() const { return params_; }
    int64_t n_vocab() const { return n_vocab_; }

    // The next token for logits (n_vocab). allowed (n_vocab, nullable): tokens with a 0 byte
    // are masked out. With out set, also fills out with the sampled token's log-probability and
    // the n_top (0 to n_vocab) likeliest tokens. Advances the generator (except when greedy);
    // does not change the history. Throws ShapeError when every token is NaN, -inf or masked.
    int32_t sample(const float* logits, const uint8_t* allowed = nullptr,
                   TokenLogprobs* out = nullptr, int64_t n_top = 0);

    // Appends a token to the history that the repetition penalty looks at; a generated token
    // (not a prompt token) also counts for the presence and frequency penalties.
    void accept(int32_t token, bool generated = true);

    // The distinct tokens whose logits step 1 changes at the next sample(): those in the
    // repetition window (when repeat_penalty != 1) and those generated so far (when a presence
    // or frequency penalty is set), in no particular order.
    std::vector<int32_t> penalized_tokens() const;

    // Forgets the history and the counts, and restarts the generator from seed.
    void reset(uint64_t seed);

    // The distribution step 6 draws from: kept token ids in descending probability (ties by id)
    // and their renormalized probabilities. Greedy gives one token with probability 1. For tests
    // and for showing alternatives.
    void distribution(const float* logits, std::vector<int32_t>* ids, std::vector<double>* probs,
                      const uint8_t* allowed = nullptr);

 private:
    struct Candidate {
        float z;     // penalized logit / temperature (-inf for NaN inputs)
        int32_t id;
    };
    // Orders candidates by descending z, then ascending id: a strict total order, so selection
    // and sorting give the same result on every run.
    static bool before(const Candidate& a, const Candidate& b) {
        return a.z > b.z || (a.z == b.z && a.id < b.id);
    }

    // Fills cand_ with the penalized, masked logits (step 1).
    void load(const float* logits, const uint8_t* allowed);
    // Fills out from cand_ as load() left it (the step-1 values), except the sampled token's
    // log-probability (taken from pen_ after the draw). Keeps a copy in pen_.
    void logprobs(TokenLogprobs* out, int64_t n_top);
    // Greedy choice over cand_ as load() left it.
    int32_t argmax() const;
    // Runs steps 3 (on the step-1 values load() left), 2 (z = value * inv_temperature, on
    // what top-k kept) and 4-5: afterwards cand_[0 .. n_kept_) holds the kept tokens (sorted
    // when `sorted`), weight_[i] = exp(z_i - z_max) and kept_mass_ their sum.
    void filter(float inv_temperature, bool sorted);
    // Moves the k best candidates to cand_[0 .. k), unordered.
    void select_top_k(int64_t k);
    double uniform();

    int64_t n_vocab_;
    SamplerParams params_;
    std::mt19937_64 rng_;
    std::vector<int32_t> history_;   // (repeat_last_n) ring of accepted tokens
    int64_t history_next_ = 0;       // next slot of the ring to write
    int64_t history_size_ = 0;       // filled slots
    std::vector<uint32_t> stamp_;    // (n_vocab) marks tokens already penalized in this call
    uint32_t stamp_now_ = 0;
    std::vector<Candidate> cand_;    // (n_vocab)
    std::vector<double> weight_;     // (n_vocab) unnormalized probabilities of cand_
    std::vector<Candidate> heap_;    // (top_k) selection heap
    std::vector<int32_t> count_;     // (n_vocab) times each token was generated
    std::vector<int32_t> counted_;   // distinct generated tokens, in order of first appearance
    std::vector<float> pen_;         // (n_vocab) step-1 logits, kept while logprobs are asked
    double pen_lse_ = 0.0;           // log-sum-exp of pen_
    std::vector<double> bin_mass_;   // (kBins) top-p histogram of probability mass
    int64_t n_kept_ = 0;
    double kept_mass_ = 0.0;
};

// One row of a batched draw (sample_rows): the inputs, then what the draw gives.
struct SampleRow {
    Sampler* sampler = nullptr;       // used by one thread only during the call
    const float* logits = nullptr;    // (n_vocab)
    const uint8_t* allowed = nullptr; // (n_vocab) or nullptr: the constraint's mask
    int64_t n_top = -1;               // < 0: no log-probabilities; else the alternatives wanted
    int32_t token = -1;               // out: the sampled token
    TokenLogprobs logprobs;           // out, when n_top >= 0
    std::string error;                // out: why the row failed (empty: it did not)
};

// Samples every row; with a pool, rows are split over its threads (the caller's thread
// included). Each row's result is what rows[i].sampler->sample() alone would give. A row that
// fails (every token masked) records its message and the others still run; the call then
// throws ShapeError naming the first failed row, unless throw_on_error is false (the caller
// reads rows[i].error). Call it without the Python GIL.
void sample_rows(SampleRow* rows, int64_t n, ThreadPool* pool, bool throw_on_error = true);

}  // namespace bitnet
