// ReservedMemory: an anonymous MAP_NORESERVE mapping on POSIX, calloc elsewhere.
#include "core/reserved_memory.h"

#include <cstdlib>
#include <new>
#include <utility>
#include <vector>

#if defined(__unix__) || defined(__APPLE__)
#include <sys/mman.h>
#include <unistd.h>
#define BITNET_HAVE_MMAP 1
#endif

namespace bitnet {

ReservedMemory::ReservedMemory(size_t bytes, bool huge_pages) : size_(bytes) {
    if (bytes == 0) return;
#ifdef BITNET_HAVE_MMAP
    int flags = MAP_PRIVATE | MAP_ANONYMOUS;
#ifdef MAP_NORESERVE
    flags |= MAP_NORESERVE;
#endif
    void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, flags, -1, 0);
    if (p == MAP_FAILED) throw std::bad_alloc();
    data_ = static_cast<uint8_t*>(p);
    mapped_ = true;
#ifdef MADV_HUGEPAGE
    if (huge_pages) ::madvise(p, bytes, MADV_HUGEPAGE);
#endif
#else
    (void)huge_pages;
    data_ = static_cast<uint8_t*>(std::calloc(bytes, 1));
    if (data_ == nullptr) throw std::bad_alloc();
#endif
}

void ReservedMemory::release() {
    if (data_ == nullptr) return;
#ifdef BITNET_HAVE_MMAP
    if (mapped_) ::munmap(data_, size_);
#else
    std::free(data_);
#endif
    data_ = nullptr;
    size_ = 0;
    mapped_ = false;
}

ReservedMemory::~ReservedMemory() { release(); }

ReservedMemory::ReservedMemory(ReservedMemory&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)),
      size_(std::exchange(other.size_, 0)),
      mapped_(std::exchange(other.mapped_, false)) {}

ReservedMemory& ReservedMemory::operator=(ReservedMemory&& other) noexcept {
    if (this != &other) {
        release();
        data_ = std::exchange(other.data_, nullptr);
        size_ = std::exchange(other.size_, 0);
        mapped_ = std::exchange(other.mapped_, false);
    }
    return *this;
}

size_t ReservedMemory::resident_bytes() const {
#ifdef BITNET_HAVE_MMAP
    if (!mapped_ || size_ == 0) return size_;
    const auto page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
    const size_t n_pages = (size_ + page - 1) / page;
    // Chunks of 64 Ki pages keep the vector small for large reservations.
    constexpr size_t kChunk = size_t{1} << 16;
    std::vector<unsigned char> vec(n_pages < kChunk ? n_pages : kChunk);
    size_t resident = 0;
    for (size_t first = 0; first < n_pages; first += kChunk) {
        const size_t count = n_pages - first < kChunk ? n_pages - first : kChunk;
        const size_t len = (first + count) * page > size_ ? size_ - first * page : count * page;
        if (::mincore(data_ + first * page, len, vec.data()) != 0) return size_;
        for (size_t i = 0; i < count; ++i) resident += (vec[i] & 1) ? page : 0;
    }
    return resident < size_ ? resident : size_;
#else
    return size_;
#endif
}

}  // namespace bitnet
