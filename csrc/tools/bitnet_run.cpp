// bitnet_run: decodes a list of token ids with the C++ engine alone and writes every position's
// logits to a file. No Python, no tokenizer: a runner for qemu-user (the aarch64 tests),
// sanitizer builds and debuggers.
//
// Usage:
//     bitnet_run [options] MODEL.gguf OUT ID [ID ...]
//       --n-ctx N      context of the session (default: the number of ids)
//       --n-batch N    tokens per forward pass (default 256; 1 decodes token by token)
//       --threads N    threads of the forward pass (default 1)
//       --kv-type T    KV cache type: f32, f16 (default) or q8_0
//       --kv-f16       the same as --kv-type f16 (kept for older scripts)
//       --text         write text (one line of n_vocab values per position, %.9g) instead of
//                      raw little-endian float32 (n_ids, n_vocab), row-major
// Prints one line to stdout: "isa=<kernels> n_vocab=<V> n_tokens=<N> elapsed_ms=<T>".
// Exit status: 0 on success, 1 when the model or the decode fails (message on stderr), 2 on a
// usage error.
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <string>
#include <vector>

#include "model/model.h"

namespace {

int usage(const char* message) {
    std::fprintf(stderr, "bitnet_run: %s\n", message);
    std::fprintf(stderr, "usage: bitnet_run [--n-ctx N] [--n-batch N] [--threads N] [--kv-type f32|f16|q8_0] [--text] MODEL.gguf OUT "
                         "ID [ID ...]\n");
    return 2;
}

// Parses a whole decimal integer; false on trailing characters or overflow.
bool parse_int(const char* s, int64_t& out) {
    if (s == nullptr || *s == '\0') return false;
    char* end = nullptr;
    errno = 0;
    const long long v = std::strtoll(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0') return false;
    out = v;
    return true;
}

bool write_logits(const std::string& path, const std::vector<float>& logits, int64_t n_vocab,
                  bool text) {
    std::FILE* f = std::fopen(path.c_str(), text ? "w" : "wb");
    if (f == nullptr) return false;
    bool ok = true;
    if (text) {
        for (size_t i = 0; i < logits.size() && ok; ++i) {
            const bool last = (static_cast<int64_t>(i) + 1) % n_vocab == 0;
            ok = std::fprintf(f, "%.9g%c", static_cast<double>(logits[i]), last ? '\n' : ' ') > 0;
        }
    } else {
        ok = std::fwrite(logits.data(), sizeof(float), logits.size(), f) == logits.size();
    }
    return std::fclose(f) == 0 && ok;
}

}  // namespace

int main(int argc, char** argv) {
    int64_t n_ctx = 0;
    int64_t n_batch = 256;
    int64_t n_threads = 1;
    bool text = false;
    bitnet::KvType kv_type = bitnet::KvType::kF16;
    std::vector<std::string> positional;
    for (int i = 1; i < argc; ++i) {
        const char* a = argv[i];
        if (std::strcmp(a, "--n-ctx") == 0 || std::strcmp(a, "--n-batch") == 0) {
            int64_t v = 0;
            if (i + 1 >= argc || !parse_int(argv[i + 1], v) || v < 1) {
                return usage("--n-ctx and --n-batch take a positive integer");
            }
            (a[4] == 'c' ? n_ctx : n_batch) = v;
            ++i;
        } else if (std::strcmp(a, "--threads") == 0) {
            if (i + 1 >= argc || !parse_int(argv[i + 1], n_threads) || n_threads < 1 || n_threads > 1024) {
                return usage("--threads takes an integer in [1, 1024]");
            }
            ++i;
        } else if (std::strcmp(a, "--kv-f16") == 0) {
            kv_type = bitnet::KvType::kF16;
        } else if (std::strcmp(a, "--kv-type") == 0) {
            const std::string name = i + 1 < argc ? argv[i + 1] : "";
            if (name == "f32") {
                kv_type = bitnet::KvType::kF32;
            } else if (name == "f16") {
                kv_type = bitnet::KvType::kF16;
            } else if (name == "q8_0") {
                kv_type = bitnet::KvType::kQ8_0;
            } else {
                return usage("--kv-type takes f32, f16 or q8_0");
            }
            ++i;
        } else if (std::strcmp(a, "--text") == 0) {
            text = true;
        } else if (std::strcmp(a, "--help") == 0 || std::strcmp(a, "-h") == 0) {
            usage("decodes token ids and writes their logits");
            return 0;
        } else if (a[0] == '-' && a[1] == '-') {
            return usage((std::string("unknown option ") + a).c_str());
        } else {
            positional.emplace_back(a);
        }
    }
    if (positional.size() < 3) return usage("expected MODEL, OUT and at least one token id");
    std::vector<int32_t> ids;
    for (size_t i = 2; i < positional.size(); ++i) {
        int64_t v = 0;
        if (!parse_int(positional[i].c_str(), v) || v < INT32_MIN || v > INT32_MAX) {
            return usage(("not a token id: " + positional[i]).c_str());
        }
        ids.push_back(static_cast<int32_t>(v));
    }
    const int64_t n = static_cast<int64_t>(ids.size());

    try {
        const std::shared_ptr<const bitnet::Model> model = bitnet::Model::load(positional[0]);
        const int64_t n_vocab = model->config().n_vocab;
        bitnet::Session session(model, bitnet::SessionOptions{n_ctx > 0 ? n_ctx : n, n_batch,
                                                              static_cast<int>(n_threads), kv_type});
        std::vector<float> logits(static_cast<size_t>(n * n_vocab));
        const auto t0 = std::chrono::steady_clock::now();
        session.decode(ids.data(), n, logits.data(), /*all_logits=*/true);
        const auto t1 = std::chrono::steady_clock::now();
        if (!write_logits(positional[1], logits, n_vocab, text)) {
            std::fprintf(stderr, "bitnet_run: cannot write %s: %s\n", positional[1].c_str(),
                         std::strerror(errno));
            return 1;
        }
        const double elapsed_ms = std::chrono::duration<double, std::milli>(t1 - t0).count();
        std::printf("isa=%s n_vocab=%lld n_tokens=%lld elapsed_ms=%.1f\n", model->kernels().isa,
                    static_cast<long long>(n_vocab), static_cast<long long>(n), elapsed_ms);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "bitnet_run: %s\n", e.what());
        return 1;
    }
    return 0;
}
