// MappedFile: mmap on POSIX, a plain read into memory elsewhere.
#include "core/mapped_file.h"

#include <cerrno>
#include <cstring>
#include <fstream>

#include "core/error.h"

#if defined(__unix__) || defined(__APPLE__)
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#define BITNET_HAVE_MMAP 1
#endif

namespace bitnet {

MappedFile::MappedFile(const std::string& path) : path_(path) {
#ifdef BITNET_HAVE_MMAP
    // The file type is checked before open(): opening a FIFO for reading blocks until a writer
    // appears, and a device may do anything on open. O_NONBLOCK covers a path swapped for a
    // FIFO between the two calls; it has no effect on regular files.
    struct stat st {};
    BITNET_CHECK(::stat(path.c_str(), &st) == 0, FormatError, path, ": cannot open: ",
                 std::strerror(errno));
    BITNET_CHECK(S_ISREG(st.st_mode), FormatError, path, ": not a regular file (",
                 S_ISDIR(st.st_mode) ? "a directory" : S_ISFIFO(st.st_mode) ? "a FIFO"
                 : S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode) ? "a device" : "not a plain file",
                 ")");
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    BITNET_CHECK(fd >= 0, FormatError, path, ": cannot open: ", std::strerror(errno));
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        int err = errno;
        ::close(fd);
        throw FormatError(str_cat(path, ": not a regular file",
                                  err ? std::string(": ") + std::strerror(err) : ""));
    }
    size_ = static_cast<uint64_t>(st.st_size);
    if (size_ > 0) {
        void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
        int err = errno;
        ::close(fd);
        BITNET_CHECK(p != MAP_FAILED, FormatError, path, ": cannot map ", size_,
                     " bytes: ", std::strerror(err));
        data_ = static_cast<const uint8_t*>(p);
        mapped_ = true;
    } else {
        ::close(fd);
    }
#else
    std::ifstream in(path, std::ios::binary | std::ios::ate);
    BITNET_CHECK(in.good(), FormatError, path, ": cannot open");
    size_ = static_cast<uint64_t>(in.tellg());
    if (size_ > 0) {
        auto* buf = new uint8_t[size_];
        in.seekg(0);
        in.read(reinterpret_cast<char*>(buf), static_cast<std::streamsize>(size_));
        if (!in) {
            delete[] buf;
            throw FormatError(str_cat(path, ": read failed"));
        }
        data_ = buf;
    }
#endif
}

MappedFile::~MappedFile() {
    if (data_ == nullptr) return;
#ifdef BITNET_HAVE_MMAP
    if (mapped_) {
        ::munmap(const_cast<uint8_t*>(data_), size_);
        return;
    }
#endif
    delete[] data_;
}

void MappedFile::release_pages(uint64_t offset, uint64_t size) const {
#ifdef BITNET_HAVE_MMAP
    if (!mapped_ || offset >= size_) return;
    const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
    uint64_t begin = (offset + page - 1) / page * page;  // only whole pages inside the range
    uint64_t end = std::min(offset + size, size_) / page * page;
    if (end > begin) {
        ::madvise(const_cast<uint8_t*>(data_) + begin, end - begin, MADV_DONTNEED);
    }
#else
    (void)offset;
    (void)size;
#endif
}

void advise_huge_pages(void* p, size_t bytes) {
#if defined(BITNET_HAVE_MMAP) && defined(MADV_HUGEPAGE)
    ::madvise(p, bytes, MADV_HUGEPAGE);
#else
    (void)p;
    (void)bytes;
#endif
}

}  // namespace bitnet
