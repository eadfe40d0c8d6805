// A large zero-filled region of address space whose pages become resident only when written.
//
// Used for the KV cache: reserving n_blocks blocks costs address space, not memory, so a cache
// sized for many long sequences holds only what has been written ("grows with use"). On POSIX
// it is an anonymous private mapping with MAP_NORESERVE; elsewhere a calloc (which most C
// libraries also back with untouched pages). Move-only; not thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>

namespace bitnet {

class ReservedMemory {
 public:
    ReservedMemory() = default;
    // Reserves bytes (> 0) of zero-filled memory, 64-byte aligned (page aligned on POSIX).
    // huge_pages: ask for transparent huge pages (fewer TLB misses when read as large streams).
    // Throws std::bad_alloc when the address space is not available.
    explicit ReservedMemory(size_t bytes, bool huge_pages = false);
    ~ReservedMemory();
    ReservedMemory(ReservedMemory&& other) noexcept;
    ReservedMemory& operator=(ReservedMemory&& other) noexcept;
    ReservedMemory(const ReservedMemory&) = delete;
    ReservedMemory& operator=(const ReservedMemory&) = delete;

    uint8_t* data() { return data_; }
    const uint8_t* data() const { return data_; }
    size_t size() const { return size_; }

    // Bytes of the region that are resident in memory now (mincore on POSIX; size() elsewhere).
    size_t resident_bytes() const;

 private:
    void release();
    uint8_t* data_ = nullptr;
    size_t size_ = 0;
    bool mapped_ = false;
};

}  // namespace bitnet
