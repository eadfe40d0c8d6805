// GGUF parsing with every read bounds-checked (the reader obligations of docs/format.md).
#include "format/gguf.h"

#include <algorithm>
#include <cmath>
#include <new>
#include <cstring>
#include <limits>

#include "core/error.h"
#include "format/types.h"

namespace bitnet {
namespace {

constexpr uint64_t kMaxNameBytes = 4096;     // tensor names and keys; ggml itself allows 64
constexpr uint32_t kMaxArrayNesting = 4;     // arrays of arrays are legal but never deep
constexpr uint32_t kMaxAlignment = 1u << 20;

// Where the first invalid UTF-8 sequence of [p, p + n) starts, or n when it is all valid.
// Strict, as Python decodes: no overlong forms, no surrogates, nothing above U+10FFFF.
uint64_t utf8_invalid_at(const uint8_t* p, uint64_t n) {
    uint64_t i = 0;
    while (i < n) {
        const uint8_t c = p[i];
        if (c < 0x80) {
            ++i;
            continue;
        }
        uint64_t len = 0;
        uint8_t lo = 0x80, hi = 0xBF;  // the allowed range of the second byte
        if (c >= 0xC2 && c <= 0xDF) {
            len = 2;
        } else if (c >= 0xE0 && c <= 0xEF) {
            len = 3;
            if (c == 0xE0) lo = 0xA0;  // overlong
            if (c == 0xED) hi = 0x9F;  // surrogates
        } else if (c >= 0xF0 && c <= 0xF4) {
            len = 4;
            if (c == 0xF0) lo = 0x90;  // overlong
            if (c == 0xF4) hi = 0x8F;  // above U+10FFFF
        } else {
            return i;
        }
        if (len > n - i || p[i + 1] < lo || p[i + 1] > hi) return i;
        for (uint64_t k = 2; k < len; ++k) {
            if (p[i + k] < 0x80 || p[i + k] > 0xBF) return i;
        }
        i += len;
    }
    return n;
}

// What a read is for, formatted only when it fails: "<what> of <of> '<name>' [index]". Parsing a
// vocabulary reads hundreds of thousands of strings; building a message for each would dominate.
struct Where {
    const char* what;
    const char* of = nullptr;          // "key", "tensor", "metadata entry"
    const std::string* name = nullptr;
    int64_t index = -1;

    std::string str() const {
        std::string s = what;
        if (of) s += std::string(" of ") + of;
        if (name) s += " '" + *name + "'";
        if (index >= 0) s += name ? str_cat(" [", index, "]") : str_cat(" ", index);
        return s;
    }
};

// Sequential little-endian reader over [0, size) of the file. Every read checks that the bytes
// exist and throws FormatError naming the file, what was being read and the offset.
//
// The bytes are read from `snapshot`, a private copy of the file's prefix that grows as the
// cursor advances: the header is parsed from, and later read from, memory nobody else can
// change, so rewriting the file under a loaded model cannot invalidate what was validated.
class Cursor {
 public:
    Cursor(const MappedFile& file, std::vector<uint8_t>& snapshot)
        : file_(file), snapshot_(snapshot) {}

    uint64_t pos() const { return pos_; }
    uint64_t remaining() const { return file_.size() - pos_; }

    void need(uint64_t n, const Where& what) {
        if (n > remaining()) {
            throw FormatError(str_cat(file_.path(), ": truncated while reading ", what.str(),
                                      " at byte offset ", pos_, ": need ", n, " bytes, ",
                                      remaining(), " left (file size ", file_.size(), ")"));
        }
        const uint64_t end = pos_ + n;
        if (end > snapshot_.size()) {
            // Grow by half again (at least 64 KiB) so copying stays linear in the header size.
            const uint64_t have = snapshot_.size();
            const uint64_t want = std::min<uint64_t>(
                file_.size(), std::max<uint64_t>(end, have + std::max<uint64_t>(have / 2, 1 << 16)));
            snapshot_.insert(snapshot_.end(), file_.data() + have, file_.data() + want);
        }
    }

    template <typename T>
    T read(const Where& what) {
        need(sizeof(T), what);
        T v;
        std::memcpy(&v, snapshot_.data() + pos_, sizeof(T));
        pos_ += sizeof(T);
        return v;
    }

    void skip(uint64_t n, const Where& what) {
        need(n, what);
        pos_ += n;
    }

    // A length-prefixed string, checked to be valid UTF-8 (GGUF strings are UTF-8).
    std::string read_string(const Where& what, uint64_t max_len) {
        const uint64_t at = pos_;
        const uint64_t len = read<uint64_t>(what);
        if (len > max_len) {
            throw FormatError(str_cat(file_.path(), ": ", what.str(), " at byte offset ", at,
                                      " has length ", len, ", more than the limit of ", max_len));
        }
        skip_utf8(len, what);
        return std::string(reinterpret_cast<const char*>(snapshot_.data() + pos_ - len), len);
    }

    // Skips n bytes of string data after checking that they are valid UTF-8.
    void skip_utf8(uint64_t n, const Where& what) {
        need(n, what);
        const uint64_t bad = utf8_invalid_at(snapshot_.data() + pos_, n);
        if (bad != n) {
            throw FormatError(str_cat(file_.path(), ": ", what.str(), " is not valid UTF-8: byte 0x",
                                      std::hex, static_cast<unsigned>(snapshot_[pos_ + bad]),
                                      std::dec, " at byte offset ", pos_ + bad));
        }
        pos_ += n;
    }

 private:
    const MappedFile& file_;
    std::vector<uint8_t>& snapshot_;
    uint64_t pos_ = 0;
};

bool valid_type(uint32_t t) { return t <= static_cast<uint32_t>(GgufType::F64); }

// Skips one value of type `type`, validating nested lengths. Returns nothing; throws on overrun.
// index: the element's position when the value is an array element (-1: a whole value).
void skip_value(Cursor& cur, GgufType type, const std::string& key, uint32_t depth,
                const std::string& path, int64_t index = -1) {
    const uint64_t scalar = GgufFile::scalar_bytes(type);
    if (scalar) {
        cur.skip(scalar, {"value", "key", &key, index});
        return;
    }
    if (type == GgufType::STRING) {
        const uint64_t len = cur.read<uint64_t>({"string length", "key", &key, index});
        cur.skip_utf8(len, {"string value", "key", &key, index});
        return;
    }
    // ARRAY
    BITNET_CHECK(depth < kMaxArrayNesting, FormatError, path, ": key '", key,
                 "': arrays nested more than ", kMaxArrayNesting, " deep");
    const uint32_t elem = cur.read<uint32_t>({"array element type", "key", &key, index});
    BITNET_CHECK(valid_type(elem), FormatError, path, ": key '", key,
                 "': invalid array element type ", elem);
    const uint64_t count = cur.read<uint64_t>({"array length", "key", &key, index});
    const uint64_t elem_scalar = GgufFile::scalar_bytes(static_cast<GgufType>(elem));
    if (elem_scalar) {
        BITNET_CHECK(count <= cur.remaining() / elem_scalar, FormatError, path, ": key '", key,
                     "': array of ", count, " elements of ", elem_scalar,
                     " bytes does not fit in the ", cur.remaining(), " bytes left");
        cur.skip(count * elem_scalar, {"array", "key", &key, index});
        return;
    }
    // Strings and arrays take at least 8 bytes each: reject absurd counts before looping.
    BITNET_CHECK(count <= cur.remaining() / 8, FormatError, path, ": key '", key, "': array of ",
                 count, " elements cannot fit in the ", cur.remaining(), " bytes left");
    for (uint64_t i = 0; i < count; ++i) {
        skip_value(cur, static_cast<GgufType>(elem), key, depth + 1, path,
                   static_cast<int64_t>(i));
    }
}

}  // namespace

const char* gguf_type_name(GgufType type) {
    switch (type) {
        case GgufType::U8: return "uint8";
        case GgufType::I8: return "int8";
        case GgufType::U16: return "uint16";
        case GgufType::I16: return "int16";
        case GgufType::U32: return "uint32";
        case GgufType::I32: return "int32";
        case GgufType::F32: return "float32";
        case GgufType::BOOL: return "bool";
        case GgufType::STRING: return "string";
        case GgufType::ARRAY: return "array";
        case GgufType::U64: return "uint64";
        case GgufType::I64: return "int64";
        case GgufType::F64: return "float64";
    }
    return "invalid";
}

uint64_t GgufFile::scalar_bytes(GgufType type) {
    switch (type) {
        case GgufType::U8:
        case GgufType::I8:
        case GgufType::BOOL: return 1;
        case GgufType::U16:
        case GgufType::I16: return 2;
        case GgufType::U32:
        case GgufType::I32:
        case GgufType::F32: return 4;
        case GgufType::U64:
        case GgufType::I64:
        case GgufType::F64: return 8;
        case GgufType::STRING:
        case GgufType::ARRAY: return 0;
    }
    return 0;
}

std::string GgufTensor::shape_str() const {
    std::string s = "[";
    for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
    return s + "]";
}

GgufFile::GgufFile(const std::string& path) : file_(std::make_unique<MappedFile>(path)) {
    try {
        parse();
    } catch (const std::bad_alloc&) {
        // Every count is checked against the file size before anything is sized from it, so
        // this is a machine without memory for a header of this size, not a corrupt count.
        throw Error(str_cat(path, ": out of memory while reading the GGUF header (",
                            header_.size(), " bytes read of ", file_->size(), ")"));
    }
}

void GgufFile::parse() {
    const std::string& path = file_->path();
    Cursor cur(*file_, header_);
    const uint32_t magic = cur.read<uint32_t>({"magic"});
    BITNET_CHECK(magic == kGgufMagic, FormatError, path,
                 ": not a GGUF file (expected magic 'GGUF', found bytes 0x", std::hex, magic,
                 std::dec, ")");
    version_ = cur.read<uint32_t>({"version"});
    BITNET_CHECK(version_ == 2 || version_ == 3, FormatError, path, ": unsupported GGUF version ",
                 version_, " (this reader supports versions 2 and 3)");
    const uint64_t n_tensors = cur.read<uint64_t>({"tensor count"});
    const uint64_t n_kv = cur.read<uint64_t>({"metadata count"});
    // Each entry takes at least 13 bytes (an empty key, a type, a one-byte value), each tensor
    // info at least 24: counts beyond what the file can hold are corrupt.
    BITNET_CHECK(n_kv <= cur.remaining() / 13, FormatError, path, ": metadata count ", n_kv,
                 " cannot fit in a file of ", file_->size(), " bytes");
    BITNET_CHECK(n_tensors <= cur.remaining() / 24, FormatError, path, ": tensor count ",
                 n_tensors, " cannot fit in a file of ", file_->size(), " bytes");

    kvs_.reserve(std::min<uint64_t>(n_kv, 1024));  // a hint: counts come from the file
    for (uint64_t i = 0; i < n_kv; ++i) {
        GgufKv kv;
        kv.key = cur.read_string({"key", "metadata entry", nullptr, static_cast<int64_t>(i)},
                                 kMaxNameBytes);
        BITNET_CHECK(!kv.key.empty(), FormatError, path, ": metadata entry ", i, " has an empty key");
        const uint32_t type = cur.read<uint32_t>({"type", "key", &kv.key});
        BITNET_CHECK(valid_type(type), FormatError, path, ": key '", kv.key,
                     "' has invalid value type ", type);
        kv.type = static_cast<GgufType>(type);
        kv.value_offset = cur.pos();
        if (kv.type == GgufType::ARRAY) {
            // Peek at the element type and count; skip_value validates the whole array.
            Cursor peek = cur;
            const uint32_t elem = peek.read<uint32_t>({"array element type", "key", &kv.key});
            kv.elem_type = static_cast<GgufType>(elem);
            kv.count = peek.read<uint64_t>({"array length", "key", &kv.key});
        }
        skip_value(cur, kv.type, kv.key, 0, path);
        kv.value_bytes = cur.pos() - kv.value_offset;
        BITNET_CHECK(kv_index_.emplace(kv.key, kvs_.size()).second, FormatError, path,
                     ": duplicate metadata key '", kv.key, "'");
        kvs_.push_back(std::move(kv));
    }

    if (const GgufKv* kv = find_kv("general.alignment")) {
        BITNET_CHECK(kv->type == GgufType::U32 || kv->type == GgufType::I32 ||
                         kv->type == GgufType::U64,
                     FormatError, path, ": general.alignment must be an integer, found ",
                     gguf_type_name(kv->type));
        const uint64_t a = read_uint_at(kv->value_offset, kv->type);
        BITNET_CHECK(a > 0 && a <= kMaxAlignment && (a & (a - 1)) == 0, FormatError, path,
                     ": general.alignment ", a, " is not a power of two in [1, ", kMaxAlignment,
                     "]");
        alignment_ = static_cast<uint32_t>(a);
    }

    tensors_.reserve(std::min<uint64_t>(n_tensors, 4096));
    for (uint64_t i = 0; i < n_tensors; ++i) {
        GgufTensor t;
        t.name = cur.read_string({"name", "tensor", nullptr, static_cast<int64_t>(i)},
                                 kMaxNameBytes);
        BITNET_CHECK(!t.name.empty(), FormatError, path, ": tensor ", i, " has an empty name");
        const std::string what = "tensor '" + t.name + "'";
        const uint32_t n_dims = cur.read<uint32_t>({"dimension count", "tensor", &t.name});
        BITNET_CHECK(n_dims >= 1 && n_dims <= kGgufMaxDims, FormatError, path, ": ", what, " has ",
                     n_dims, " dimensions (expected 1 to ", kGgufMaxDims, ")");
        t.n_elements = 1;
        for (uint32_t d = 0; d < n_dims; ++d) {
            const uint64_t ne = cur.read<uint64_t>({"shape", "tensor", &t.name});
            BITNET_CHECK(ne >= 1, FormatError, path, ": ", what, " has dimension ", d, " of size 0");
            BITNET_CHECK(ne <= (uint64_t{1} << 62) / t.n_elements, FormatError, path, ": ", what,
                         " has an element count that overflows");
            t.n_elements *= ne;
            t.shape.push_back(ne);
        }
        t.type = cur.read<uint32_t>({"type", "tensor", &t.name});
        auto traits = type_traits(t.type);
        BITNET_CHECK(traits.has_value(), FormatError, path, ": ", what, " has unknown tensor type id ",
                     t.type, " (a corrupt file, or a type newer than this reader)");
        auto bytes = tensor_bytes(t.type, t.shape[0], t.n_elements);
        BITNET_CHECK(bytes.has_value(), FormatError, path, ": ", what, " of type ", traits->name,
                     " has row length ", t.shape[0], ", not a multiple of the block size ",
                     traits->block_size);
        t.size_bytes = *bytes;
        t.offset = cur.read<uint64_t>({"data offset", "tensor", &t.name});  // relative for now
        BITNET_CHECK(t.offset % alignment_ == 0, FormatError, path, ": ", what, " data offset ",
                     t.offset, " is not a multiple of the alignment ", alignment_);
        BITNET_CHECK(tensor_index_.emplace(t.name, tensors_.size()).second, FormatError, path,
                     ": duplicate tensor name '", t.name, "'");
        tensors_.push_back(std::move(t));
    }

    // The data section starts at the next multiple of the alignment.
    const uint64_t end_of_header = cur.pos();
    data_offset_ = (end_of_header + alignment_ - 1) / alignment_ * alignment_;
    BITNET_CHECK(tensors_.empty() || data_offset_ <= file_->size(), FormatError, path,
                 ": truncated: the tensor data section would start at byte ", data_offset_,
                 " but the file has ", file_->size(), " bytes");
    header_.resize(end_of_header);  // the snapshot may have read ahead; keep the header only
    header_.shrink_to_fit();

    for (GgufTensor& t : tensors_) {
        const uint64_t avail = file_->size() - data_offset_;
        BITNET_CHECK(t.offset <= avail && t.size_bytes <= avail - t.offset, FormatError, path,
                     ": tensor '", t.name, "' (", type_name(t.type), ", shape ", t.shape_str(),
                     ") needs bytes [", data_offset_ + t.offset, ", ",
                     data_offset_ + t.offset + t.size_bytes, ") but the file has ", file_->size(),
                     " bytes (truncated?)");
        t.offset += data_offset_;
        t.data = file_->data() + t.offset;
    }

    // Tensors must not overlap: sort a copy of their ranges by offset and compare neighbours.
    std::vector<const GgufTensor*> by_offset;
    by_offset.reserve(tensors_.size());
    for (const GgufTensor& t : tensors_) by_offset.push_back(&t);
    std::sort(by_offset.begin(), by_offset.end(),
              [](const GgufTensor* a, const GgufTensor* b) { return a->offset < b->offset; });
    for (size_t i = 1; i < by_offset.size(); ++i) {
        const GgufTensor* prev = by_offset[i - 1];
        const GgufTensor* next = by_offset[i];
        BITNET_CHECK(prev->offset + prev->size_bytes <= next->offset, FormatError, path,
                     ": tensors '", prev->name, "' and '", next->name, "' overlap");
    }
}

const GgufKv* GgufFile::find_kv(const std::string& key) const {
    auto it = kv_index_.find(key);
    return it == kv_index_.end() ? nullptr : &kvs_[it->second];
}

const GgufTensor* GgufFile::find_tensor(const std::string& name) const {
    auto it = tensor_index_.find(name);
    return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

void GgufFile::fail_type(const GgufKv& kv, const char* expected) const {
    std::string found = gguf_type_name(kv.type);
    if (kv.type == GgufType::ARRAY) found += str_cat(" of ", gguf_type_name(kv.elem_type));
    throw FormatError(str_cat(path(), ": key '", kv.key, "' should be ", expected, ", found ",
                              found));
}

static bool is_integer(GgufType t) {
    switch (t) {
        case GgufType::U8:
        case GgufType::I8:
        case GgufType::U16:
        case GgufType::I16:
        case GgufType::U32:
        case GgufType::I32:
        case GgufType::U64:
        case GgufType::I64: return true;
        default: return false;
    }
}

static bool is_signed(GgufType t) {
    return t == GgufType::I8 || t == GgufType::I16 || t == GgufType::I32 || t == GgufType::I64;
}

int64_t GgufFile::read_int_at(uint64_t offset, GgufType type) const {
    const uint8_t* p = header_.data() + offset;
    switch (type) {
        case GgufType::U8: return *p;
        case GgufType::I8: return static_cast<int8_t>(*p);
        case GgufType::BOOL: return *p != 0;
        case GgufType::U16: { uint16_t v; std::memcpy(&v, p, 2); return v; }
        case GgufType::I16: { int16_t v; std::memcpy(&v, p, 2); return v; }
        case GgufType::U32: { uint32_t v; std::memcpy(&v, p, 4); return v; }
        case GgufType::I32: { int32_t v; std::memcpy(&v, p, 4); return v; }
        case GgufType::U64: {
            uint64_t v;
            std::memcpy(&v, p, 8);
            if (v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
                throw FormatError(str_cat(path(), ": integer at byte offset ", offset,
                                          " is out of range: ", v));
            }
            return static_cast<int64_t>(v);
        }
        case GgufType::I64: { int64_t v; std::memcpy(&v, p, 8); return v; }
        default: break;
    }
    throw FormatError(str_cat(path(), ": value at byte offset ", offset, " is not an integer"));
}

uint64_t GgufFile::read_uint_at(uint64_t offset, GgufType type) const {
    if (type == GgufType::U64) {
        uint64_t v;
        std::memcpy(&v, header_.data() + offset, 8);
        return v;
    }
    const int64_t v = read_int_at(offset, type);
    if (v < 0) {
        throw FormatError(str_cat(path(), ": value at byte offset ", offset,
                                  " should be non-negative, found ", v));
    }
    return static_cast<uint64_t>(v);
}

double GgufFile::read_float_at(uint64_t offset, GgufType type) const {
    const uint8_t* p = header_.data() + offset;
    if (type == GgufType::F32) {
        float v;
        std::memcpy(&v, p, 4);
        return v;
    }
    if (type == GgufType::F64) {
        double v;
        std::memcpy(&v, p, 8);
        return v;
    }
    return static_cast<double>(read_int_at(offset, type));
}

std::string GgufFile::read_string_at(uint64_t offset) const {
    uint64_t len;
    std::memcpy(&len, header_.data() + offset, 8);  // validated by the constructor
    return std::string(reinterpret_cast<const char*>(header_.data() + offset + 8), len);
}

std::optional<std::string> GgufFile::get_string(const std::string& key) const {
    const GgufKv* kv = find_kv(key);
    if (!kv) return std::nullopt;
    if (kv->type != GgufType::STRING) fail_type(*kv, "a string");
    return read_string_at(kv->value_offset);
}

std::optional<uint64_t> GgufFile::get_uint(const std::string& key) const {
    const GgufKv* kv = find_kv(key);
    if (!kv) return std::nullopt;
    if (!is_integer(kv->type)) fail_type(*kv, "an integer");
    if (is_signed(kv->type) && read_int_at(kv->value_offset, kv->type) < 0) {
        throw FormatError(str_cat(path(), ": key '", key, "' should be non-negative, found ",
                                  read_int_at(kv->value_offset, kv->type)));
    }
    return read_uint_at(kv->value_offset, kv->type);
}

std::optional<int64_t> GgufFile::get_int(const std::string& key) const {
    const GgufKv* kv = find_kv(key);
    if (!kv) return std::nullopt;
    if (!is_integer(kv->type)) fail_type(*kv, "an integer");
    return read_int_at(kv->value_offset, kv->type);
}

std::optional<double> GgufFile::get_float(const std::string& key) const {
    const GgufKv* kv = find_kv(key);
    if (!kv) return std::nullopt;
    if (kv->type != GgufType::F32 && kv->type != GgufType::F64 && !is_integer(kv->type)) {
        fail_type(*kv, "a number");
    }
    return read_float_at(kv->value_offset, kv->type);
}

std::optional<bool> GgufFile::get_bool(const std::string& key) const {
    const GgufKv* kv = find_kv(key);
    if (!kv) return std::nullopt;
    if (kv->type != GgufType::BOOL) fail_type(*kv, "a bool");
    return header_[kv->value_offset] != 0;
}

std::optional<std::vector<std::string>> GgufFile::get_string_array(const std::string& key) const {
    const GgufKv* kv = find_kv(key);
    if (!kv) return std::nullopt;
    if (kv->type != GgufType::ARRAY || kv->elem_type != GgufType::STRING) {
        fail_type(*kv, "an array of strings");
    }
    std::vector<std::string> out;
    out.reserve(kv->count);
    uint64_t pos = kv->value_offset + 12;  // element type + count
    for (uint64_t i = 0; i < kv->count; ++i) {
        out.push_back(read_string_at(pos));
        pos += 8 + out.back().size();
    }
    return out;
}

std::optional<std::vector<int64_t>> GgufFile::get_int_array(const std::string& key) const {
    const GgufKv* kv = find_kv(key);
    if (!kv) return std::nullopt;
    if (kv->type != GgufType::ARRAY || !is_integer(kv->elem_type)) {
        fail_type(*kv, "an array of integers");
    }
    const uint64_t step = scalar_bytes(kv->elem_type);
    std::vector<int64_t> out(kv->count);
    for (uint64_t i = 0; i < kv->count; ++i) {
        out[i] = read_int_at(kv->value_offset + 12 + i * step, kv->elem_type);
    }
    return out;
}

std::optional<std::vector<double>> GgufFile::get_number_array(const std::string& key) const {
    const GgufKv* kv = find_kv(key);
    if (!kv) return std::nullopt;
    const uint64_t step = kv->type == GgufType::ARRAY ? scalar_bytes(kv->elem_type) : 0;
    if (kv->type != GgufType::ARRAY || step == 0 || kv->elem_type == GgufType::BOOL) {
        fail_type(*kv, "an array of numbers");
    }
    std::vector<double> out(kv->count);
    for (uint64_t i = 0; i < kv->count; ++i) {
        out[i] = read_float_at(kv->value_offset + 12 + i * step, kv->elem_type);
    }
    return out;
}

std::optional<std::vector<uint8_t>> GgufFile::get_byte_array(const std::string& key) const {
    const GgufKv* kv = find_kv(key);
    if (!kv) return std::nullopt;
    if (kv->type != GgufType::ARRAY ||
        (kv->elem_type != GgufType::U8 && kv->elem_type != GgufType::I8)) {
        fail_type(*kv, "an array of bytes");
    }
    const uint8_t* p = header_.data() + kv->value_offset + 12;
    return std::vector<uint8_t>(p, p + kv->count);
}

}  // namespace bitnet
