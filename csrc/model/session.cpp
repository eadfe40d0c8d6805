// Session: one sequence over a private KV cache, run by a BatchDecoder one step at a time.
#include <algorithm>
#include <numeric>

#include "core/error.h"
#include "model/decoder.h"
#include "model/model.h"

namespace bitnet {

Session::Session(std::shared_ptr<const Model> model, int64_t n_ctx, int64_t n_batch)
    : Session(std::move(model), SessionOptions{n_ctx, n_batch, 1, KvType::kF16}) {}

Session::Session(std::shared_ptr<const Model> model, const SessionOptions& options)
    : model_(std::move(model)), kv_type_(options.kv_type) {
    const ModelConfig& c = model_->config();
    n_ctx_ = options.n_ctx > 0 ? options.n_ctx : c.n_ctx_train;
    BITNET_CHECK(n_ctx_ >= 1 && n_ctx_ <= kMaxPositions, ShapeError, "n_ctx ", n_ctx_,
                 " is out of range [1, 2^24]");
    BITNET_CHECK(options.n_batch >= 1, ShapeError, "n_batch must be at least 1, got ",
                 options.n_batch);
    BITNET_CHECK(options.n_threads >= 0 && options.n_threads <= 1024, ShapeError,
                 "n_threads must be in [0, 1024], got ", options.n_threads);
    n_batch_ = std::min(options.n_batch, n_ctx_);
    // A private cache shares no blocks: larger blocks make longer contiguous streams for
    // attention (the numbers do not depend on the block size).
    constexpr int64_t kSessionBlockTokens = 128;
    const int64_t n_blocks = (n_ctx_ + kSessionBlockTokens - 1) / kSessionBlockTokens;
    auto cache = std::make_shared<KvCache>(c, kv_type_, kSessionBlockTokens, n_blocks);
    block_table_.resize(static_cast<size_t>(n_blocks));
    std::iota(block_table_.begin(), block_table_.end(), 0);
    decoder_ = std::make_unique<BatchDecoder>(model_, std::move(cache), n_batch_, options.n_threads);
}

Session::~Session() = default;

int Session::n_threads() const { return decoder_->n_threads(); }

int64_t Session::kv_resident_bytes() const { return decoder_->cache().resident_bytes(); }

void Session::truncate(int64_t n) {
    BITNET_CHECK(n >= 0 && n <= n_past_, ShapeError, "cannot truncate a session of ", n_past_,
                 " tokens to ", n);
    n_past_ = n;  // cache rows beyond n are simply overwritten later
}

TopKCounts Session::topk_counts() const { return decoder_->topk_counts(); }

void Session::decode(const int32_t* tokens, int64_t n, float* logits, bool all_logits, int64_t topk) {
    const ModelConfig& c = model_->config();
    BITNET_CHECK(n >= 1, ShapeError, "decode needs at least one token");
    BITNET_CHECK(n <= n_ctx_ - n_past_, ShapeError, "context overflow: ", n_past_,
                 " tokens in the context plus ", n, " new ones exceed n_ctx = ", n_ctx_);
    for (int64_t i = 0; i < n; ++i) {
        BITNET_CHECK(tokens[i] >= 0 && tokens[i] < c.n_vocab, ShapeError, "token id ", tokens[i],
                     " at index ", i, " is out of range [0, ", c.n_vocab, ")");
    }
    std::vector<SequenceStep> step(1);
    SequenceStep& s = step[0];
    s.block_table = block_table_.data();
    s.n_table = static_cast<int64_t>(block_table_.size());
    s.topk = topk;
    for (int64_t start = 0; start < n; start += n_batch_) {
        const int64_t count = std::min(n_batch_, n - start);
        const bool last_chunk = start + count == n;
        s.n_past = n_past_;
        s.tokens = tokens + start;
        s.n_tokens = count;
        s.logits = all_logits ? LogitsMode::kAll : last_chunk ? LogitsMode::kLast : LogitsMode::kNone;
        decoder_->step(step, all_logits ? logits + start * c.n_vocab : logits);
        n_past_ += count;
    }
}

}  // namespace bitnet
