// The threaded decoder end to end: several sessions over one shared Model, each in its own thread
// and each with its own pool of worker threads, must produce exactly the logits of a
// single-threaded session. Run under ThreadSanitizer (BITNET_SANITIZE=thread) it checks the
// thread pool's barriers and the sharing of the immutable Model; under AddressSanitizer and
// UndefinedBehaviorSanitizer it runs the whole forward pass with threads.
//
// Usage: test_threads MODEL.gguf [MODEL.gguf ...]
// Prints one line per failure and "N passed, N failed".
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "model/model.h"

namespace {

int g_passed = 0;
int g_failed = 0;

void check(bool ok, const std::string& what) {
    if (ok) {
        ++g_passed;
    } else {
        ++g_failed;
        std::printf("FAIL %s\n", what.c_str());
    }
}

constexpr int64_t kPrompt = 24;  // tokens of the prompt, decoded in batches
constexpr int64_t kSteps = 6;    // then this many single-token steps

bitnet::SessionOptions options(int n_threads, bool kv_f16) {
    bitnet::SessionOptions o;
    o.n_ctx = 64;
    o.n_batch = 7;  // an awkward batch: the prompt is split 7 + 7 + 7 + 3
    o.n_threads = n_threads;
    o.kv_f16 = kv_f16;
    return o;
}

// Logits of every prompt token, then of each single-token step: (kPrompt + kSteps, n_vocab).
std::vector<float> run(const std::shared_ptr<const bitnet::Model>& model, int n_threads,
                       bool kv_f16, int seed) {
    const int64_t n_vocab = model->config().n_vocab;
    std::vector<int32_t> ids(static_cast<size_t>(kPrompt + kSteps));
    for (size_t i = 0; i < ids.size(); ++i) {
        ids[i] = static_cast<int32_t>((i * 7919 + static_cast<size_t>(seed) * 104729) % n_vocab);
    }
    std::vector<float> logits(ids.size() * static_cast<size_t>(n_vocab));
    bitnet::Session session(model, options(n_threads, kv_f16));
    session.decode(ids.data(), kPrompt, logits.data(), true);
    for (int64_t s = 0; s < kSteps; ++s) {
        session.decode(ids.data() + kPrompt + s, 1, logits.data() + (kPrompt + s) * n_vocab, false);
    }
    return logits;
}

void test_model(const std::string& path) {
    bitnet::LoadOptions load;
    load.n_threads = 3;  // repacking on threads too
    std::shared_ptr<const bitnet::Model> model = bitnet::Model::load(path, load);
    for (bool kv_f16 : {false, true}) {
        const std::string what = path + (kv_f16 ? " (fp16 KV)" : " (f32 KV)");
        constexpr int kSessions = 3;
        std::vector<std::vector<float>> reference;
        for (int s = 0; s < kSessions; ++s) reference.push_back(run(model, 1, kv_f16, s));

        // kSessions threads at once, each session with 1 + its index extra workers.
        std::vector<std::vector<float>> results(kSessions);
        std::vector<std::string> errors(kSessions);
        std::vector<std::thread> threads;
        for (int s = 0; s < kSessions; ++s) {
            threads.emplace_back([&, s] {
                try {
                    results[static_cast<size_t>(s)] = run(model, 2 + s, kv_f16, s);
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
