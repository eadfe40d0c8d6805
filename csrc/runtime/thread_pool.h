// A persistent pool of worker threads for the decoder's parallel regions.
//
// run(fn) executes fn(thread_index, n_threads) on every thread of the pool (the caller is thread
// 0) and returns when all have finished: a fork-join with one low-latency barrier. Between
// regions the workers spin briefly (about 200 microseconds, the gap between the ops of one forward
// pass), then sleep on a condition variable, so an idle pool costs no CPU.
//
// Owned by one Session; run() must not be called from two threads at once, nor from inside fn.
// fn must not throw (the kernels do not).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

namespace bitnet {

class ThreadPool {
 public:
    using TaskFn = void (*)(void* ctx, int thread_index, int n_threads);

    // n_threads >= 1 (1: no workers, run() calls fn inline).
    explicit ThreadPool(int n_threads);
    ~ThreadPool();
    ThreadPool(const ThreadPool&) = delete;
    ThreadPool& operator=(const ThreadPool&) = delete;

    int n_threads() const { return n_threads_; }

    void run(TaskFn fn, void* ctx);

    template <typename F>
    void run(F&& f) {
        run([](void* c, int i, int n) { (*static_cast<std::remove_reference_t<F>*>(c))(i, n); },
            static_cast<void*>(&f));
    }

    // The number of hardware threads (at least 1).
    static int hardware_threads();

    // The default thread count of a forward pass: the physical cores this process may run on
    // (its CPU affinity), counting SMT siblings once, as llama.cpp does. Token generation is
    // bound by memory bandwidth, which a second hardware thread per core does not add, while
    // the fork-join barrier of every region waits for the slowest thread, and two siblings
    // sharing one core each run at about half speed. Falls back to hardware_threads() where
    // the topology is not readable (non-Linux, no /sys).
    static int default_threads();

 private:
    void worker(int index);

    int n_threads_ = 1;
    std::vector<std::thread> threads_;
    TaskFn fn_ = nullptr;
    void* ctx_ = nullptr;
    std::atomic<uint64_t> generation_{0};
    std::atomic<int> pending_{0};
    std::atomic<int> sleepers_{0};
    std::atomic<bool> stop_{false};
    std::mutex mutex_;
    std::condition_variable wake_;
};

// Splits [0, n) into n_parts contiguous ranges whose bounds are multiples of granule (the last
// one ends at n) and returns part i as [*begin, *end). Parts may be empty.
void split_range(int64_t n, int64_t granule, int part, int n_parts, int64_t* begin, int64_t* end);

}  // namespace bitnet
