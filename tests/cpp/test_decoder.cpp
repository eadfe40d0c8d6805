// End to end on the bundled models: the batched decoder, threaded, over several sequences in
// mixed steps (prefill chunks beside single-token decodes, at different depths, with shared
// prefix blocks), against each sequence computed alone on one thread. Every comparison is
// bit for bit. Run by ctest, so the sanitizer build covers the threaded decoder and the
// attention kernels in place, not only in isolation.
//
//   test_decoder [MODELS_DIR]   (default: the repository's models/, fixed at build time)
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "model/decoder.h"
#include "model/kv_cache.h"
#include "model/model.h"

#include "check.h"

using namespace bitnet;
using namespace bitnet_test;

namespace {

bool same(const float* a, const float* b, size_t n) { return std::memcmp(a, b, n * sizeof(float)) == 0; }

std::vector<int32_t> random_ids(int64_t n, int64_t n_vocab, unsigned seed) {
    std::mt19937 rng(seed);
    std::vector<int32_t> ids(static_cast<size_t>(n));
    for (auto& id : ids) id = static_cast<int32_t>(rng() % static_cast<unsigned>(n_vocab));
    return ids;
}

// Every position's logits of one sequence, alone in a fresh cache, one step, one thread.
std::vector<float> alone(const std::shared_ptr<const Model>& model, const std::vector<int32_t>& ids,
                         KvType type, int64_t block_tokens) {
    const auto n = static_cast<int64_t>(ids.size());
    const int64_t n_blocks = (n + block_tokens - 1) / block_tokens;
    auto cache = std::make_shared<KvCache>(model->config(), type, block_tokens, n_blocks);
    BatchDecoder dec(model, cache, n, 1);
    std::vector<int32_t> table(static_cast<size_t>(n_blocks));
    for (int64_t b = 0; b < n_blocks; ++b) table[static_cast<size_t>(b)] = static_cast<int32_t>(b);
    std::vector<float> out(static_cast<size_t>(n * model->config().n_vocab));
    dec.step({SequenceStep{table.data(), n_blocks, 0, ids.data(), n, LogitsMode::kAll}}, out.data());
    return out;
}

struct Seq {
    std::vector<int32_t> ids;
    std::vector<int64_t> chunks;  // feed sizes per step (1 after the list ends)
    int64_t join = 0;             // first step it takes part in
    std::vector<int32_t> table;
    int64_t done = 0;
    size_t fed = 0;
    std::vector<float> logits;    // (done, n_vocab), every row
};

void mixed(const std::shared_ptr<const Model>& model, KvType type, int n_threads, int64_t bt) {
    const ModelConfig& c = model->config();
    const int64_t n_vocab = c.n_vocab;
    std::vector<Seq> seqs(4);
    seqs[0].ids = random_ids(270, n_vocab, 1);
    seqs[0].chunks = {9, 1, 200, 1, 33};
    seqs[1].ids = random_ids(24, n_vocab, 2);
    seqs[1].join = 1;
    seqs[2].ids = random_ids(61, n_vocab, 3);
    seqs[2].chunks = {61};
    seqs[2].join = 2;
    // Sequence 3 continues sequence 2's prompt: its blocks share 2's full blocks, and it gets a
    // copy of 2's partly filled last block.
    seqs[3].ids = seqs[2].ids;
    const std::vector<int32_t> tail = random_ids(17, n_vocab, 4);
    seqs[3].ids.insert(seqs[3].ids.end(), tail.begin(), tail.end());
    int64_t n_blocks = 0;
    for (Seq& s : seqs) n_blocks += (static_cast<int64_t>(s.ids.size()) + bt - 1) / bt;
    auto cache = std::make_shared<KvCache>(c, type, bt, n_blocks + 2);
    BatchDecoder dec(model, cache, 512, n_threads);
    // Tables from scattered block ids, last to first.
    int32_t next = static_cast<int32_t>(n_blocks + 1);
    for (size_t i = 0; i < 3; ++i) {
        const int64_t need = (static_cast<int64_t>(seqs[i].ids.size()) + bt - 1) / bt;
        for (int64_t b = 0; b < need; ++b) seqs[i].table.push_back(next--);
    }
    bool shared = false;
    for (int64_t step = 0;; ++step) {
        std::vector<SequenceStep> batch;
        std::vector<Seq*> who;
        std::vector<int64_t> sizes;
        for (size_t i = 0; i < seqs.size(); ++i) {
            Seq& s = seqs[i];
            if (i == 3 && !shared) continue;
            if (s.join > step || s.done >= static_cast<int64_t>(s.ids.size())) continue;
            int64_t n = s.fed < s.chunks.size() ? s.chunks[s.fed] : 1;
            n = std::min(n, static_cast<int64_t>(s.ids.size()) - s.done);
            batch.push_back({s.table.data(), static_cast<int64_t>(s.table.size()), s.done,
                             s.ids.data() + s.done, n, LogitsMode::kAll});
            who.push_back(&s);
            sizes.push_back(n);
        }
        if (batch.empty() && shared) break;
        if (!batch.empty()) {
            int64_t rows = 0;
            for (int64_t n : sizes) rows += n;
            std::vector<float> out(static_cast<size_t>(rows * n_vocab));
            dec.step(batch, out.data());
            int64_t row = 0;
            for (size_t k = 0; k < who.size(); ++k) {
                who[k]->logits.insert(who[k]->logits.end(), out.begin() + row * n_vocab,
                                      out.begin() + (row + sizes[k]) * n_vocab);
                who[k]->done += sizes[k];
                ++who[k]->fed;
                row += sizes[k];
            }
        }
        if (!shared && seqs[2].done == static_cast<int64_t>(seqs[2].ids.size())) {
            Seq& s3 = seqs[3];
            const int64_t prompt = static_cast<int64_t>(seqs[2].ids.size());
            for (int64_t b = 0; b < prompt / bt; ++b) s3.table.push_back(seqs[2].table[static_cast<size_t>(b)]);
            const int64_t need = (static_cast<int64_t>(s3.ids.size()) + bt - 1) / bt;
            while (static_cast<int64_t>(s3.table.size()) < need) s3.table.push_back(next--);
            if (prompt % bt != 0) {
                cache->copy_block(seqs[2].table[static_cast<size_t>(prompt / bt)], s3.table[static_cast<size_t>(prompt / bt)],
                                  prompt % bt);
            }
            s3.done = prompt;  // its prefix is in the shared (and copied) blocks
            s3.logits = seqs[2].logits;
            shared = true;
        }
    }
    for (size_t i = 0; i < seqs.size(); ++i) {
        const std::vector<float> want = alone(model, seqs[i].ids, type, bt);
        char what[160];
        std::snprintf(what, sizeof what, "%s kv=%s threads=%d block_tokens=%lld sequence %zu",
                      c.arch.c_str(), kv_type_name(type), n_threads, static_cast<long long>(bt), i);
        check(want.size() == seqs[i].logits.size() && same(want.data(), seqs[i].logits.data(), want.size()), what);
    }
}

// Session (one sequence, n_batch chunks) gives the alone logits too.
void session(const std::shared_ptr<const Model>& model) {
    const std::vector<int32_t> ids = random_ids(100, model->config().n_vocab, 9);
    const std::vector<float> want = alone(model, ids, KvType::kQ8_0, 32);
    Session s(model, SessionOptions{128, 23, 3, KvType::kQ8_0});
    std::vector<float> got(want.size());
    const int64_t n_vocab = model->config().n_vocab;
    s.decode(ids.data(), 60, got.data(), true);
    s.decode(ids.data() + 60, 40, got.data() + 60 * n_vocab, true);
    check(same(want.data(), got.data(), want.size()), "session over the batched decoder");
}

}  // namespace

int main(int argc, char** argv) {
    const std::string dir = argc > 1 ? argv[1] : BITNET_MODELS_DIR;
    for (const char* name : {"bitnet-kjv-5m-tq2_0.gguf", "bitnet-kjv-binary-tiny-q1_0.gguf"}) {
        const std::shared_ptr<const Model> model = Model::load(dir + "/" + name);
        std::printf("%s: isa %s\n", name, model->kernels().isa);
        mixed(model, KvType::kF16, 2, 32);
        mixed(model, KvType::kQ8_0, 3, 16);
        mixed(model, KvType::kF32, 2, 7);
        session(model);
    }
    std::printf("%d passed, %d failed\n", g_passed, g_failed);
    return g_failed == 0 ? 0 : 1;
}
