// Read-only memory mapping of a whole file.
//
// MappedFile owns the mapping and unmaps it on destruction. It is immutable after construction
// and safe to share between threads. Construction throws FormatError when the file cannot be
// opened or mapped. Readers must never touch bytes at or beyond size(): every offset taken from
// a file is checked against size() first (see format/gguf.cpp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace bitnet {

class MappedFile {
 public:
    explicit MappedFile(const std::string& path);
    ~MappedFile();
    MappedFile(const MappedFile&) = delete;
    MappedFile& operator=(const MappedFile&) = delete;

    const std::string& path() const { return path_; }
    const uint8_t* data() const { return data_; }
    uint64_t size() const { return size_; }

    // Tells the OS that [offset, offset + size) will not be read again soon, so its pages can be
    // dropped from this process's resident set (used after weights were repacked into our own
    // buffers). A hint only: never affects correctness.
    void release_pages(uint64_t offset, uint64_t size) const;

 private:
    std::string path_;
    const uint8_t* data_ = nullptr;
    uint64_t size_ = 0;
    bool mapped_ = false;  // false: data_ is a heap copy (empty files, platforms without mmap)
};

}  // namespace bitnet
