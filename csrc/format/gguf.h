// A bounds-checked reader of GGUF v2/v3 files (the container of docs/format.md).
//
// GgufFile maps the file, parses the header, the metadata key/value pairs and the tensor table,
// and validates every offset and size against the file length before anything is dereferenced:
// a truncated or corrupt file throws FormatError naming the problem, never crashes. Counts are
// checked against the bytes left before anything is sized from them; keys, tensor names and
// string values must be valid UTF-8 (FormatError naming the key and byte offset otherwise).
//
// The header (everything before the tensor data) is copied into memory the GgufFile owns while
// it is parsed, and metadata is decoded from that copy by the typed getters, which check the
// stored type: rewriting the file under a loaded model cannot change what was validated. Tensor
// data stays in the mapping (it is the bulk of the file); a file truncated while mapped raises
// SIGBUS on the next read of a lost page, as with any mmap-based loader (docs/format.md).
//
// Ownership and threads: GgufFile owns the mapping; tensor data pointers stay valid for the
// lifetime of the GgufFile. It is immutable after construction and safe to share between threads.
//
// Example:
//     bitnet::GgufFile f("model.gguf");
//     std::string arch = f.get_string("general.architecture").value_or("?");
//     const bitnet::GgufTensor* t = f.find_tensor("token_embd.weight");
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/mapped_file.h"

namespace bitnet {

constexpr uint32_t kGgufMagic = 0x46554747;  // "GGUF" read as a little-endian uint32
constexpr uint32_t kGgufDefaultAlignment = 32;
constexpr uint32_t kGgufMaxDims = 4;

// Metadata value types, numbered as in the GGUF specification.
enum class GgufType : uint32_t {
    U8 = 0,
    I8 = 1,
    U16 = 2,
    I16 = 3,
    U32 = 4,
    I32 = 5,
    F32 = 6,
    BOOL = 7,
    STRING = 8,
    ARRAY = 9,
    U64 = 10,
    I64 = 11,
    F64 = 12,
};

const char* gguf_type_name(GgufType type);

// One metadata entry. The value itself is decoded on demand from the header copy.
struct GgufKv {
    std::string key;
    GgufType type;
    GgufType elem_type = GgufType::U8;  // arrays only
    uint64_t count = 0;                 // arrays only: number of elements
    uint64_t value_offset = 0;          // file offset of the value (after the type tag)
    uint64_t value_bytes = 0;           // bytes the value occupies in the file
};

struct GgufTensor {
    std::string name;
    uint32_t type = 0;              // TensorType id (format/types.h)
    std::vector<uint64_t> shape;    // ggml order: shape[0] is the row length (contiguous axis)
    uint64_t n_elements = 0;
    uint64_t offset = 0;            // absolute file offset of the first byte
    uint64_t size_bytes = 0;
    const uint8_t* data = nullptr;  // into the mapping; size_bytes readable bytes

    uint64_t n_rows() const { return shape.empty() ? 0 : n_elements / shape[0]; }
    std::string shape_str() const;  // "[2560, 640]"
};

class GgufFile {
 public:
    explicit GgufFile(const std::string& path);

    const std::string& path() const { return file_->path(); }
    uint32_t version() const { return version_; }
    uint32_t alignment() const { return alignment_; }
    uint64_t data_offset() const { return data_offset_; }
    uint64_t file_size() const { return file_->size(); }
    const MappedFile& mapped() const { return *file_; }

    const std::vector<GgufKv>& kvs() const { return kvs_; }
    const GgufKv* find_kv(const std::string& key) const;
    const std::vector<GgufTensor>& tensors() const { return tensors_; }
    const GgufTensor* find_tensor(const std::string& name) const;

    // Typed getters: nullopt when the key is absent; FormatError when it holds another type.
    std::optional<std::string> get_string(const std::string& key) const;
    // Any integer type; FormatError when negative or out of range of uint64.
    std::optional<uint64_t> get_uint(const std::string& key) const;
    std::optional<int64_t> get_int(const std::string& key) const;
    // F32 or F64 (integers are accepted too).
    std::optional<double> get_float(const std::string& key) const;
    std::optional<bool> get_bool(const std::string& key) const;
    std::optional<std::vector<std::string>> get_string_array(const std::string& key) const;
    std::optional<std::vector<double>> get_number_array(const std::string& key) const;
    std::optional<std::vector<int64_t>> get_int_array(const std::string& key) const;
    // Raw bytes of a U8/I8 array (e.g. an embedded tokenizer model).
    std::optional<std::vector<uint8_t>> get_byte_array(const std::string& key) const;

    // Scalar decoding shared with the bindings: reads a value of `type` at a validated offset
    // (a value_offset of kvs(), or an element of its array) from the header copy.
    int64_t read_int_at(uint64_t offset, GgufType type) const;
    uint64_t read_uint_at(uint64_t offset, GgufType type) const;
    double read_float_at(uint64_t offset, GgufType type) const;
    std::string read_string_at(uint64_t offset) const;
    static uint64_t scalar_bytes(GgufType type);  // 0 for STRING and ARRAY

 private:
    void parse();
    [[noreturn]] void fail_type(const GgufKv& kv, const char* expected) const;

    std::unique_ptr<MappedFile> file_;
    std::vector<uint8_t> header_;  // (data_offset_ or less) bytes: the file's header, copied
    uint32_t version_ = 0;
    uint32_t alignment_ = kGgufDefaultAlignment;
    uint64_t data_offset_ = 0;
    std::vector<GgufKv> kvs_;
    std::vector<GgufTensor> tensors_;
    std::unordered_map<std::string, size_t> kv_index_;
    std::unordered_map<std::string, size_t> tensor_index_;
};

}  // namespace bitnet
