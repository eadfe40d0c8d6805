// libFuzzer harness: an arbitrary byte string as a model file, through everything the loader
// and the decoder do with a file.
//
// 1. GgufFile parses it; every metadata value is decoded with the getter for its stored type
//    (strings, numbers, arrays of each kind), and every tensor's bytes are read.
// 2. Model::load reads the config, binds and repacks the weights, builds the output layer
//    (int8 or float, MAD or LUT kernels: chosen by the input's length).
// 3. A Session (the batched decoder over a private paged cache; small context) decodes a few tokens: a prompt batch with every
//    token's logits, then one step.
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

// variant: picks the output layer, the ternary kernel family, the KV cache type and the thread
// count (one thread mostly: a pool's barriers cost more than a tiny model's whole forward pass).
void run_model(const std::string& path, size_t variant) {
    const int n_threads = variant % 8 == 7 ? 2 : 1;
    bitnet::LoadOptions load;
    load.n_threads = n_threads;
    load.output = variant % 2 ? bitnet::OutputType::kF32 : bitnet::OutputType::kAuto;
    load.kernel = variant / 2 % 2 ? "lut" : "mad";
    std::shared_ptr<const bitnet::Model> model = bitnet::Model::load(path, load);
    const int64_t n_vocab = model->config().n_vocab;
    bitnet::SessionOptions options;
    options.n_ctx = 8;
    options.n_batch = 3;
    options.n_threads = n_threads;
    const bitnet::KvType kv_types[] = {bitnet::KvType::kF16, bitnet::KvType::kF32, bitnet::KvType::kQ8_0};
    options.kv_type = kv_types[variant / 4 % 3];
    bitnet::Session session(model, options);
    std::vector<int32_t> ids = {0, static_cast<int32_t>(n_vocab - 1), static_cast<int32_t>(n_vocab / 2),
                                1 % static_cast<int32_t>(n_vocab)};
    std::vector<float> logits(ids.size() * static_cast<size_t>(n_vocab));
    session.decode(ids.data(), 3, logits.data(), true);
    session.decode(ids.data() + 3, 1, logits.data() + 3 * n_vocab, false);
    g_sink += static_cast<uint64_t>(logits[0] == logits[0]);
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
