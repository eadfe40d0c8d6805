// libFuzzer harness: an arbitrary byte string as a model file, through everything the loader
// and the decoder do with a file.
//
// 1. GgufFile parses it; every metadata value is decoded with the getter for its stored type
//    (strings, numbers, arrays of each kind), and every tensor's bytes are read.
// 2. Model::load reads the config, binds and repacks the weights, builds the output layer
//    (int8 or float; MAD, LUT or T3 kernels; with or without the exact-top-k pre-pass: chosen
//    by the input's length).
// 3. A Session (the batched decoder over a private paged cache; small context) decodes a few
//    tokens: a prompt batch with every token's logits, then one step. With the top-k pre-pass,
//    a BatchDecoder step asks for the top-k rows with a forced token and an allowed mask.
// Any bitnet::Error is an expected answer to a bad file. Anything else is a finding: a crash, a
// sanitizer report, an escaping std::bad_alloc, an allocation over -malloc_limit_mb (counts
// from the file must never size allocations beyond what the file holds), a timeout.
//
// Build and run: docs/format.md ("Fuzzing"); .ci/run runs it for a bounded time.
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "core/error.h"
#include "format/gguf.h"
#include "model/decoder.h"
#include "model/kv_cache.h"
#include "model/model.h"

namespace {

// The input as a file: an anonymous memory file named through /proc (no disk, no cleanup).
class MemFile {
 public:
    MemFile(const uint8_t* data, size_t size) {
        fd_ = memfd_create("fuzz.gguf", MFD_CLOEXEC);
        if (fd_ < 0) std::abort();
        for (size_t done = 0; done < size;) {
            const ssize_t n = write(fd_, data + done, size - done);
            if (n <= 0) std::abort();
            done += static_cast<size_t>(n);
        }
        path_ = "/proc/self/fd/" + std::to_string(fd_);
    }
    ~MemFile() { close(fd_); }
    const std::string& path() const { return path_; }

 private:
    int fd_ = -1;
    std::string path_;
};

// Volatile sink so that the compiler keeps every read.
volatile uint64_t g_sink = 0;

void read_metadata(const bitnet::GgufFile& f) {
    using bitnet::GgufType;
    for (const bitnet::GgufKv& kv : f.kvs()) {
        try {
            switch (kv.type) {
                case GgufType::STRING: g_sink += f.get_string(kv.key)->size(); break;
                case GgufType::BOOL: g_sink += *f.get_bool(kv.key); break;
                case GgufType::F32:
                case GgufType::F64: g_sink += static_cast<uint64_t>(*f.get_float(kv.key) != 0.0); break;
                case GgufType::ARRAY:
                    if (kv.elem_type == GgufType::STRING) {
                        const auto strings = f.get_string_array(kv.key);
                        for (const std::string& s : *strings) g_sink += s.size();
                    } else if (kv.elem_type == GgufType::U8 || kv.elem_type == GgufType::I8) {
                        g_sink += f.get_byte_array(kv.key)->size();
                        g_sink += f.get_int_array(kv.key)->size();
                    } else if (kv.elem_type != GgufType::ARRAY) {
                        g_sink += f.get_number_array(kv.key)->size();
                        if (kv.elem_type != GgufType::F32 && kv.elem_type != GgufType::F64 &&
                            kv.elem_type != GgufType::BOOL) {
                            g_sink += f.get_int_array(kv.key)->size();
                        }
                    }
                    break;
                default:
                    g_sink += static_cast<uint64_t>(*f.get_int(kv.key));
                    g_sink += *f.get_uint(kv.key);  // FormatError when negative
                    break;
            }
        } catch (const bitnet::Error&) {
            // A value of the right type may still be out of range for a getter.
        }
    }
    for (const bitnet::GgufTensor& t : f.tensors()) {
        if (t.size_bytes > 0) g_sink += t.data[0] + t.data[t.size_bytes - 1];
    }
}

// The top-k output path: one step of a BatchDecoder asking for the 2 largest allowed logits of
// the last prompt token plus a forced token (half of the vocabulary allowed).
void run_topk(const std::shared_ptr<const bitnet::Model>& model, const std::vector<int32_t>& ids,
              bitnet::KvType kv_type, int n_threads) {
    const int64_t n_vocab = model->config().n_vocab;
    auto cache = std::make_shared<bitnet::KvCache>(model->config(), kv_type, 16, 1);
    bitnet::BatchDecoder decoder(model, cache, 4, n_threads);
    const std::vector<int32_t> table = {0};
    std::vector<uint8_t> allowed(static_cast<size_t>(n_vocab));
    for (size_t i = 0; i < allowed.size(); i += 2) allowed[i] = 1;
    bitnet::SequenceStep step{table.data(), 1, 0, ids.data(), 3, bitnet::LogitsMode::kLast};
    step.topk = 2;
    step.topk_forced = ids.data() + 1;
    step.n_topk_forced = 1;
    step.topk_allowed = allowed.data();
    const std::vector<bitnet::SequenceStep> steps = {step};
    std::vector<float> logits(static_cast<size_t>(decoder.validate(steps) * n_vocab));
    decoder.step(steps, logits.data());
    g_sink += static_cast<uint64_t>(logits[static_cast<size_t>(ids[1])] == logits[0]);
}

// variant: picks the output layer, the ternary kernel family, the top-k pre-pass, the KV cache
// type and the thread count (one thread mostly: a pool's barriers cost more than a tiny model's
// whole forward pass).
void run_model(const std::string& path, size_t variant) {
    const int n_threads = variant % 8 == 7 ? 2 : 1;
    bitnet::LoadOptions load;
    load.n_threads = n_threads;
    load.output = variant % 2 ? bitnet::OutputType::kF32 : bitnet::OutputType::kAuto;
    const char* kernels[] = {"mad", "lut", "t3"};
    load.kernel = kernels[variant / 2 % 3];
    // Only with the int8 output layer (else an UnsupportedError before anything is built).
    load.topk_prepass = variant % 2 == 0 && variant / 6 % 2 == 1;
    std::shared_ptr<const bitnet::Model> model;
    try {
        model = bitnet::Model::load(path, load);
    } catch (const bitnet::UnsupportedError&) {
        // t3 on a CPU without the avx512vbmi kernels, or an int8 layer the hidden size does not
        // allow: the file still gets the loader with the default choices.
        load.kernel = "mad";
        load.topk_prepass = false;
        model = bitnet::Model::load(path, load);
    }
    const int64_t n_vocab = model->config().n_vocab;
    bitnet::SessionOptions options;
    options.n_ctx = 8;
    options.n_batch = 3;
    options.n_threads = n_threads;
    const bitnet::KvType kv_types[] = {bitnet::KvType::kF16, bitnet::KvType::kF32, bitnet::KvType::kQ8_0};
    options.kv_type = kv_types[variant / 12 % 3];
    bitnet::Session session(model, options);
    std::vector<int32_t> ids = {0, static_cast<int32_t>(n_vocab - 1), static_cast<int32_t>(n_vocab / 2),
                                1 % static_cast<int32_t>(n_vocab)};
    std::vector<float> logits(ids.size() * static_cast<size_t>(n_vocab));
    session.decode(ids.data(), 3, logits.data(), true);
    session.decode(ids.data() + 3, 1, logits.data() + 3 * n_vocab, false);
    g_sink += static_cast<uint64_t>(logits[0] == logits[0]);
    if (!model->output_topk().empty()) run_topk(model, ids, options.kv_type, n_threads);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    MemFile file(data, size);
    try {
        bitnet::GgufFile gguf(file.path());
        read_metadata(gguf);
    } catch (const bitnet::Error&) {
        return 0;  // the loader would reject it the same way
    }
    try {
        run_model(file.path(), size);
    } catch (const bitnet::Error&) {
    }
    return 0;
}
