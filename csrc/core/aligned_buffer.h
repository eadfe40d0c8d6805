// An owning, 64-byte aligned, uninitialized array (weights repacked at load, scratch buffers).
//
// Large allocations are not touched here, so pages that are never written (for example the unused
// tail of a KV cache) never become resident. Move-only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <new>
#include <utility>

namespace bitnet {

constexpr size_t kBufferAlignment = 64;
constexpr size_t kHugePage = size_t{2} << 20;

// madvise(MADV_HUGEPAGE) where the OS has it; a hint, errors ignored (mapped_file.cpp).
void advise_huge_pages(void* p, size_t bytes);

template <typename T>
class AlignedBuffer {
 public:
    AlignedBuffer() = default;
    // huge_pages: for large, long-lived buffers read as streams (repacked weights).
    explicit AlignedBuffer(size_t n, bool huge_pages = false) : size_(n) {
        if (n == 0) return;
        // A size whose byte count would wrap is an allocation no machine can make.
        if (n > (SIZE_MAX - kBufferAlignment) / sizeof(T)) throw std::bad_alloc();
        const size_t bytes = (n * sizeof(T) + kBufferAlignment - 1) / kBufferAlignment * kBufferAlignment;
        void* p = nullptr;
        // Huge-page buffers start on a 2 MiB boundary and ask for transparent huge pages:
        // streaming a model through 4 KiB pages costs a TLB miss every 4 KiB.
        const bool huge = huge_pages && bytes >= kHugePage;
        if (posix_memalign(&p, huge ? kHugePage : kBufferAlignment, bytes) != 0) throw std::bad_alloc();
        if (huge) advise_huge_pages(p, bytes);
        data_ = static_cast<T*>(p);
    }
    ~AlignedBuffer() { std::free(data_); }
    AlignedBuffer(AlignedBuffer&& other) noexcept
        : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}
    AlignedBuffer& operator=(AlignedBuffer&& other) noexcept {
        if (this != &other) {
            std::free(data_);
            data_ = std::exchange(other.data_, nullptr);
            size_ = std::exchange(other.size_, 0);
        }
        return *this;
    }
    AlignedBuffer(const AlignedBuffer&) = delete;
    AlignedBuffer& operator=(const AlignedBuffer&) = delete;

    T* data() { return data_; }
    const T* data() const { return data_; }
    size_t size() const { return size_; }
    T& operator[](size_t i) { return data_[i]; }
    const T& operator[](size_t i) const { return data_[i]; }

 private:
    T* data_ = nullptr;
    size_t size_ = 0;
};

}  // namespace bitnet
