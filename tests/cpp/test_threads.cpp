// The threaded decoder end to end, from several threads at once: sessions over one shared Model,
// each in its own thread with its own pool of worker threads, and batched decoders over one
// shared KV cache stepping from different threads. Every result must equal, bit for bit, a
// single-threaded run. Run under ThreadSanitizer (BITNET_SANITIZE=thread) it checks the thread
// pools' barriers, the sharing of the immutable Model and the cache's locking; under
// AddressSanitizer and UndefinedBehaviorSanitizer it runs the whole forward pass with threads.
//
// Usage: test_threads MODEL.gguf [MODEL.gguf ...]
// Prints one line per failure and "N passed, N failed".
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "model/decoder.h"
#include "model/kv_cache.h"
#include "model/model.h"

#include "check.h"

using namespace bitnet_test;

namespace {

constexpr int64_t kPrompt = 24;  // tokens of the prompt, decoded in batches
constexpr int64_t kSteps = 6;    // then this many single-token steps

bitnet::SessionOptions options(int n_threads, bitnet::KvType kv_type) {
    bitnet::SessionOptions o;
    o.n_ctx = 64;
    o.n_batch = 7;  // an awkward batch: the prompt is split 7 + 7 + 7 + 3
    o.n_threads = n_threads;
    o.kv_type = kv_type;
    return o;
}

std::vector<int32_t> prompt_ids(int64_t n_vocab, int seed) {
    std::vector<int32_t> ids(static_cast<size_t>(kPrompt + kSteps));
    for (size_t i = 0; i < ids.size(); ++i) {
        ids[i] = static_cast<int32_t>((i * 7919 + static_cast<size_t>(seed) * 104729) % n_vocab);
    }
    return ids;
}

// Logits of every prompt token, then of each single-token step: (kPrompt + kSteps, n_vocab).
std::vector<float> run(const std::shared_ptr<const bitnet::Model>& model, int n_threads,
                       bitnet::KvType kv_type, int seed) {
    const int64_t n_vocab = model->config().n_vocab;
    const std::vector<int32_t> ids = prompt_ids(n_vocab, seed);
    std::vector<float> logits(ids.size() * static_cast<size_t>(n_vocab));
    bitnet::Session session(model, options(n_threads, kv_type));
    session.decode(ids.data(), kPrompt, logits.data(), true);
    for (int64_t s = 0; s < kSteps; ++s) {
        session.decode(ids.data() + kPrompt + s, 1, logits.data() + (kPrompt + s) * n_vocab, false);
    }
    return logits;
}

// Batched decoders sharing one KV cache, each stepping its own sequence (its own blocks) from
// its own thread: the prompt in batches of 5, then single tokens. Returns every position's logits.
std::vector<float> run_shared(const std::shared_ptr<const bitnet::Model>& model,
                              const std::shared_ptr<bitnet::KvCache>& cache, int first_block,
                              int n_threads, int seed) {
    const int64_t n_vocab = model->config().n_vocab;
    const std::vector<int32_t> ids = prompt_ids(n_vocab, seed);
    const auto n = static_cast<int64_t>(ids.size());
    const int64_t n_table = (n + cache->block_tokens() - 1) / cache->block_tokens();
    std::vector<int32_t> table(static_cast<size_t>(n_table));
    for (int64_t b = 0; b < n_table; ++b) table[static_cast<size_t>(b)] = first_block + static_cast<int32_t>(b);
    bitnet::BatchDecoder decoder(model, cache, 5, n_threads);
    std::vector<float> logits(static_cast<size_t>(n * n_vocab));
    for (int64_t pos = 0; pos < n;) {
        const int64_t count = std::min<int64_t>(pos < kPrompt ? 5 : 1, n - pos);
        const bitnet::SequenceStep step{table.data(), n_table, pos, ids.data() + pos, count,
                                        bitnet::LogitsMode::kAll};
        decoder.step({step}, logits.data() + pos * n_vocab);
        pos += count;
    }
    return logits;
}

void test_shared_cache(const std::shared_ptr<const bitnet::Model>& model, const std::string& path,
                       bitnet::KvType kv_type) {
    constexpr int kDecoders = 3;
    constexpr int64_t kBlockTokens = 8;
    const int64_t per_seq = (kPrompt + kSteps + kBlockTokens - 1) / kBlockTokens;
    auto cache = std::make_shared<bitnet::KvCache>(model->config(), kv_type, kBlockTokens,
                                                   kDecoders * per_seq);
    auto alone = std::make_shared<bitnet::KvCache>(model->config(), kv_type, kBlockTokens, per_seq);
    std::vector<std::vector<float>> results(kDecoders);
    std::vector<std::string> errors(kDecoders);
    std::vector<std::thread> threads;
    for (int d = 0; d < kDecoders; ++d) {
        threads.emplace_back([&, d] {
            try {
                results[static_cast<size_t>(d)] = run_shared(
                    model, cache, static_cast<int>(d * per_seq), 1 + d, d);
            } catch (const std::exception& e) {
                errors[static_cast<size_t>(d)] = e.what();
            }
        });
    }
    for (std::thread& t : threads) t.join();
    for (int d = 0; d < kDecoders; ++d) {
        const std::string what = path + " (shared cache, " + bitnet::kv_type_name(kv_type) +
                                 "): decoder " + std::to_string(d);
        check(errors[static_cast<size_t>(d)].empty(), what + " threw " + errors[static_cast<size_t>(d)]);
        const std::vector<float> want = run_shared(model, alone, 0, 1, d);
        const auto& got = results[static_cast<size_t>(d)];
        check(got.size() == want.size() &&
                  std::memcmp(got.data(), want.data(), got.size() * sizeof(float)) == 0,
              what + " differs from the same sequence alone on one thread");
    }
}

void test_model(const std::string& path) {
    bitnet::LoadOptions load;
    load.n_threads = 3;  // repacking on threads too
    std::shared_ptr<const bitnet::Model> model = bitnet::Model::load(path, load);
    for (bitnet::KvType kv_type : {bitnet::KvType::kF32, bitnet::KvType::kF16, bitnet::KvType::kQ8_0}) {
        if (kv_type == bitnet::KvType::kQ8_0 && model->config().head_dim % 32 != 0) continue;
        test_shared_cache(model, path, kv_type);
        const std::string what = path + " (" + bitnet::kv_type_name(kv_type) + " KV)";
        constexpr int kSessions = 3;
        std::vector<std::vector<float>> reference;
        for (int s = 0; s < kSessions; ++s) reference.push_back(run(model, 1, kv_type, s));

        // kSessions threads at once, each session with 1 + its index extra workers.
        std::vector<std::vector<float>> results(kSessions);
        std::vector<std::string> errors(kSessions);
        std::vector<std::thread> threads;
        for (int s = 0; s < kSessions; ++s) {
            threads.emplace_back([&, s] {
                try {
                    results[static_cast<size_t>(s)] = run(model, 2 + s, kv_type, s);
                } catch (const std::exception& e) {
                    errors[static_cast<size_t>(s)] = e.what();
                }
            });
        }
        for (std::thread& t : threads) t.join();
        for (int s = 0; s < kSessions; ++s) {
            const auto& got = results[static_cast<size_t>(s)];
            const auto& want = reference[static_cast<size_t>(s)];
            check(errors[static_cast<size_t>(s)].empty(),
                  what + ": session " + std::to_string(s) + " threw " + errors[static_cast<size_t>(s)]);
            // Each output row is summed by one thread in a fixed order: bit for bit equal.
            check(got.size() == want.size() &&
                      std::memcmp(got.data(), want.data(), got.size() * sizeof(float)) == 0,
                  what + ": session " + std::to_string(s) + " with " + std::to_string(2 + s) +
                      " threads differs from the single-threaded logits");
        }
    }
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 2) {
        std::fprintf(stderr, "usage: test_threads MODEL.gguf [MODEL.gguf ...]\n");
        return 2;
    }
    for (int i = 1; i < argc; ++i) {
        try {
            test_model(argv[i]);
        } catch (const std::exception& e) {
            check(false, std::string(argv[i]) + ": " + e.what());
        }
    }
    std::printf("%d passed, %d failed\n", g_passed, g_failed);
    return g_failed == 0 ? 0 : 1;
}
