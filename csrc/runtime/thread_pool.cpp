// Fork-join thread pool with spin-then-sleep workers (see thread_pool.h).
#include "runtime/thread_pool.h"

#include <chrono>
#include <fstream>
#include <set>
#include <string>

#if defined(__linux__)
#include <sched.h>
#endif
#if defined(__APPLE__)
#include <sys/sysctl.h>
#endif

namespace bitnet {
namespace {

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

constexpr auto kSpin = std::chrono::microseconds(200);

}  // namespace

int ThreadPool::hardware_threads() {
    const unsigned n = std::thread::hardware_concurrency();
    return n == 0 ? 1 : static_cast<int>(n);
}

int ThreadPool::default_threads() {
#if defined(__linux__)
    cpu_set_t allowed;
    CPU_ZERO(&allowed);
    if (sched_getaffinity(0, sizeof(allowed), &allowed) == 0) {
        // One core per distinct sibling list among the CPUs we may run on. A CPU whose topology
        // is unreadable counts as a core of its own.
        std::set<std::string> cores;
        int n_allowed = 0;
        for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
            if (!CPU_ISSET(cpu, &allowed)) continue;
            ++n_allowed;
            const std::string dir =
                "/sys/devices/system/cpu/cpu" + std::to_string(cpu) + "/topology/";
            std::string siblings;
            for (const char* name : {"core_cpus_list", "thread_siblings_list"}) {
                std::ifstream f(dir + name);
                if (f && std::getline(f, siblings) && !siblings.empty()) break;
                siblings.clear();
            }
            cores.insert(siblings.empty() ? "cpu" + std::to_string(cpu) : siblings);
        }
        if (n_allowed > 0) return static_cast<int>(cores.size());
    }
#elif defined(__APPLE__)
    int n = 0;
    size_t size = sizeof(n);
    if (sysctlbyname("hw.physicalcpu", &n, &size, nullptr, 0) == 0 && n > 0) return n;
#endif
    return hardware_threads();
}

ThreadPool::ThreadPool(int n_threads) : n_threads_(n_threads < 1 ? 1 : n_threads) {
    threads_.reserve(static_cast<size_t>(n_threads_ - 1));
    for (int i = 1; i < n_threads_; ++i) threads_.emplace_back(&ThreadPool::worker, this, i);
}

ThreadPool::~ThreadPool() {
    {
        std::lock_guard<std::mutex> lock(mutex_);
        stop_.store(true);
        generation_.fetch_add(1);
    }
    wake_.notify_all();
    for (std::thread& t : threads_) t.join();
}

void ThreadPool::run(TaskFn fn, void* ctx) {
    if (n_threads_ == 1) {
        fn(ctx, 0, 1);
        return;
    }
    fn_ = fn;
    ctx_ = ctx;
    pending_.store(n_threads_ - 1);
    generation_.fetch_add(1);  // seq_cst: publishes fn_/ctx_, ordered before the sleepers_ read
    if (sleepers_.load() > 0) {
        { std::lock_guard<std::mutex> lock(mutex_); }
        wake_.notify_all();
    }
    fn(ctx, 0, n_threads_);
    // The barrier: spin (the workers finish within microseconds of us), yield if it takes long.
    auto start = std::chrono::steady_clock::now();
    for (int spins = 0; pending_.load(std::memory_order_acquire) != 0; ++spins) {
        cpu_relax();
        if ((spins & 1023) == 1023 && std::chrono::steady_clock::now() - start > kSpin) {
            std::this_thread::yield();
        }
    }
}

void ThreadPool::worker(int index) {
    uint64_t seen = 0;
    for (;;) {
        // Wait for a new generation: spin first, then sleep.
        auto start = std::chrono::steady_clock::now();
        uint64_t gen = generation_.load(std::memory_order_acquire);
        for (int spins = 0; gen == seen; ++spins) {
            cpu_relax();
            if ((spins & 255) == 255 && std::chrono::steady_clock::now() - start > kSpin) {
                std::unique_lock<std::mutex> lock(mutex_);
                sleepers_.fetch_add(1);
                wake_.wait(lock, [&] { return generation_.load() != seen; });
                sleepers_.fetch_sub(1);
                start = std::chrono::steady_clock::now();
            }
            gen = generation_.load(std::memory_order_acquire);
        }
        seen = gen;
        if (stop_.load()) return;
        fn_(ctx_, index, n_threads_);
        pending_.fetch_sub(1, std::memory_order_release);
    }
}

void split_range(int64_t n, int64_t granule, int part, int n_parts, int64_t* begin, int64_t* end) {
    const int64_t units = (n + granule - 1) / granule;
    const int64_t lo = units * part / n_parts;
    const int64_t hi = units * (part + 1) / n_parts;
    *begin = lo * granule < n ? lo * granule : n;
    *end = hi * granule < n ? hi * granule : n;
}

}  // namespace bitnet
