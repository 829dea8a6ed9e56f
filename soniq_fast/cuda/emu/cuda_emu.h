// CUDA emulation runtime: runs unmodified kernels written in SONIQ's portable
// CUDA subset on the CPU, bit for bit.
//
// Model:
//   * every CUDA thread of a block is a fiber (ucontext) with its own stack;
//   * blocks run one after another, so a kernel's `__shared__` variables (made
//     `static` here) are exactly per-block shared memory; they are filled with a
//     poison byte (0xA5) before every block, so reading unwritten shared memory
//     gives garbage rather than a previous block's values;
//   * `__syncthreads()` is a real barrier: a thread parks until every thread of
//     the block waits at the same `__syncthreads` of the source. A barrier reached
//     by only some threads (divergent code, or threads that already returned)
//     aborts the launch with an error naming the line;
//   * warp intrinsics (`__syncwarp`, `__shfl*_sync`, `__ballot_sync`,
//     `__any_sync`, `__all_sync`) park the lane until every lane in `mask` has
//     arrived; a lane waiting for a lane that cannot arrive is reported;
//   * the scheduler runs ready threads in forward, reverse or seeded random
//     order (blocks likewise), so a result that depends on the order of
//     unsynchronised threads shows up as a test failure.
//
// Included once per emulation build, before the kernel source (see module.py).
#pragma once

#include <ucontext.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <utility>
#include <vector>

struct dim3 {
    unsigned x, y, z;
    constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

// Deliberately not `static`: an external call (the fiber switch) may change
// them, so the compiler reloads them after every barrier.
dim3 threadIdx, blockIdx, blockDim, gridDim;
const int warpSize = 32;

#define __global__
#define __host__
#define __device__ static inline
#define __forceinline__ __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))
// Every __shared__ variable lands in one ELF section, so the runtime can find
// them all (the linker defines __start_/__stop_ symbols for the section) and
// poison them before each block: a thread that reads shared memory nobody in
// its block wrote sees garbage, as on hardware, not the previous block's data.
#define __shared__ static __attribute__((section("soniq_shared"), used))
#define __restrict__ __restrict
#define __launch_bounds__(...)

namespace soniq_emu {

enum class State { Ready, AtBarrier, AtWarpSync, Done };

struct Fiber {
    ucontext_t ctx;
    State state = State::Ready;
    int line = 0;           // barrier source line while AtBarrier
    int site = 0;           // which textual __syncthreads (two on one line differ)
    unsigned mask = 0;      // lane mask while AtWarpSync
    dim3 tid;
};

struct Launch {
    std::vector<Fiber> fibers;
    std::unique_ptr<char[]> stacks;   // not zeroed: a fiber's stack starts as garbage, as on hardware
    std::vector<uint64_t> exchange;   // one slot per thread for warp data exchange
    ucontext_t scheduler;
    std::function<void()> body;
    std::string error;
    int current = -1;
    int threads = 0;
};

constexpr size_t kStackBytes = 128 * 1024;

inline Launch*& active() {
    static Launch* launch = nullptr;
    return launch;
}

inline Fiber& self() { return active()->fibers[active()->current]; }
inline int self_index() { return active()->current; }

inline void park() {
    Launch* l = active();
    swapcontext(&l->fibers[l->current].ctx, &l->scheduler);
}

// Stop the launch from inside a thread: record why and never resume this fiber.
[[noreturn]] inline void fail(const std::string& why) {
    Launch* l = active();
    if (l->error.empty()) {
        const dim3 t = self().tid;
        l->error = why + " (block " + std::to_string(blockIdx.x) + "," +
                   std::to_string(blockIdx.y) + "," + std::to_string(blockIdx.z) +
                   ", thread " + std::to_string(t.x) + "," + std::to_string(t.y) + "," +
                   std::to_string(t.z) + ")";
    }
    self().state = State::Done;
    park();
    std::abort();  // unreachable: the scheduler never resumes a failed launch
}

inline void syncthreads(int line, int site) {
    Fiber& f = self();
    f.state = State::AtBarrier;
    f.line = line;
    f.site = site;
    park();
}

inline int lane_of(int t) { return t % 32; }
inline int warp_base(int t) { return t - t % 32; }

inline void warp_sync(unsigned mask) {
    const int t = self_index();
    if (!(mask & (1u << lane_of(t)))) fail("warp intrinsic called with a mask that excludes the calling lane");
    for (int lane = 0; lane < 32; ++lane)
        if ((mask >> lane & 1u) && warp_base(t) + lane >= active()->threads)
            fail("warp intrinsic mask names lane " + std::to_string(lane) + " which does not exist");
    Fiber& f = self();
    f.state = State::AtWarpSync;
    f.mask = mask;
    park();
}

template <class T>
inline uint64_t to_bits(T v) {
    static_assert(sizeof(T) <= 8, "warp exchange carries at most 64 bits");
    uint64_t bits = 0;
    std::memcpy(&bits, &v, sizeof(T));
    return bits;
}

template <class T>
inline T from_bits(uint64_t bits) {
    T v;
    std::memcpy(&v, &bits, sizeof(T));
    return v;
}

// Every lane of `mask` publishes `v`, then reads lane `src` of its warp.
template <class T>
inline T exchange(unsigned mask, T v, int src) {
    Launch* l = active();
    const int t = self_index();
    l->exchange[t] = to_bits(v);
    warp_sync(mask);
    if (!(mask >> src & 1u)) fail("warp shuffle reads lane " + std::to_string(src) + " outside the mask");
    const uint64_t got = l->exchange[warp_base(t) + src];
    warp_sync(mask);  // nobody overwrites a slot before every lane has read it
    return from_bits<T>(got);
}

inline unsigned vote(unsigned mask, bool pred) {
    Launch* l = active();
    const int t = self_index();
    l->exchange[t] = pred ? 1u : 0u;
    warp_sync(mask);
    unsigned bits = 0;
    for (int lane = 0; lane < 32; ++lane)
        if ((mask >> lane & 1u) && l->exchange[warp_base(t) + lane]) bits |= 1u << lane;
    warp_sync(mask);
    return bits;
}

// ------------------------------------------------------------------ scheduler

enum Schedule { Forward = 0, Reverse = 1, Random = 2 };

inline void fiber_entry() {
    Launch* l = active();
    l->body();
    l->fibers[l->current].state = State::Done;
    // returning follows uc_link back to the scheduler
}

inline std::vector<int> order(int n, int schedule, std::mt19937_64& rng) {
    std::vector<int> idx(n);
    for (int i = 0; i < n; ++i) idx[i] = i;
    if (schedule == Reverse) std::reverse(idx.begin(), idx.end());
    if (schedule == Random) std::shuffle(idx.begin(), idx.end(), rng);
    return idx;
}

inline std::string line_text(int line) { return "line " + std::to_string(line); }

// Release every warp group whose mask lanes have all arrived; true if any did.
inline bool release_warps(Launch& l) {
    bool released = false;
    for (int t = 0; t < l.threads; ++t) {
        Fiber& f = l.fibers[t];
        if (f.state != State::AtWarpSync) continue;
        bool complete = true;
        for (int lane = 0; lane < 32 && complete; ++lane) {
            if (!(f.mask >> lane & 1u)) continue;
            const Fiber& g = l.fibers[warp_base(t) + lane];
            complete = g.state == State::AtWarpSync && g.mask == f.mask;
        }
        if (!complete) continue;
        for (int lane = 0; lane < 32; ++lane)
            if (f.mask >> lane & 1u) l.fibers[warp_base(t) + lane].state = State::Ready;
        released = true;
    }
    return released;
}

// Release the block barrier if every thread waits at it; diagnose a divergent one.
inline bool release_barrier(Launch& l, std::string& error) {
    int waiting = 0, done = 0, first = -1;
    for (int t = 0; t < l.threads; ++t) {
        const Fiber& f = l.fibers[t];
        if (f.state == State::AtBarrier) {
            ++waiting;
            if (first < 0) first = t;
            else if (f.site != l.fibers[first].site)
                error = "divergent __syncthreads: threads wait at two different barriers (" +
                        line_text(l.fibers[first].line) + ", " + line_text(f.line) + ")";
        } else if (f.state == State::Done) {
            ++done;
        }
    }
    if (!error.empty() || waiting == 0) return false;
    if (waiting + done < l.threads) return false;  // others are at a warp sync
    if (done > 0) {
        error = "__syncthreads at " + line_text(l.fibers[first].line) + " reached by " +
                std::to_string(waiting) + " of " + std::to_string(l.threads) +
                " threads (the others returned): barrier in divergent code";
        return false;
    }
    for (auto& f : l.fibers) f.state = State::Ready;
    return true;
}

inline std::string deadlock_report(const Launch& l) {
    for (int t = 0; t < l.threads; ++t)
        if (l.fibers[t].state == State::AtWarpSync)
            return "warp intrinsic in thread " + std::to_string(t) +
                   " waits for lanes that never arrive (divergent warp code or a lane at "
                   "__syncthreads / returned)";
    return "threads blocked with nothing runnable";
}

extern "C" char __start_soniq_shared[] __attribute__((weak, visibility("hidden")));
extern "C" char __stop_soniq_shared[] __attribute__((weak, visibility("hidden")));
constexpr unsigned char kSharedPoison = 0xA5;

inline void poison_shared_memory() {
    char* begin = __start_soniq_shared;
    char* end = __stop_soniq_shared;
    if (begin && end > begin) std::memset(begin, kSharedPoison, size_t(end - begin));
}

inline void run_block(Launch& l, int schedule, std::mt19937_64& rng) {
    poison_shared_memory();
    static ucontext_t prototype;
    static bool have_prototype = false;
    if (!have_prototype) {
        getcontext(&prototype);
        have_prototype = true;
    }
    for (int t = 0; t < l.threads; ++t) {
        Fiber& f = l.fibers[t];
        f.state = State::Ready;
        f.tid = dim3(t % blockDim.x, t / blockDim.x % blockDim.y, t / (blockDim.x * blockDim.y));
        f.ctx = prototype;
        f.ctx.uc_stack.ss_sp = l.stacks.get() + size_t(t) * kStackBytes;
        f.ctx.uc_stack.ss_size = kStackBytes;
        f.ctx.uc_link = &l.scheduler;
        makecontext(&f.ctx, fiber_entry, 0);
    }
    for (;;) {
        bool ran = false;
        for (int t : order(l.threads, schedule, rng)) {
            if (l.fibers[t].state != State::Ready) continue;
            l.current = t;
            threadIdx = l.fibers[t].tid;
            swapcontext(&l.scheduler, &l.fibers[t].ctx);
            l.current = -1;
            ran = true;
            if (!l.error.empty()) return;
        }
        bool all_done = true;
        for (const auto& f : l.fibers) all_done = all_done && f.state == State::Done;
        if (all_done) return;
        std::string error;
        const bool released = release_warps(l) | release_barrier(l, error);
        if (!error.empty()) {
            l.error = error + " (block " + std::to_string(blockIdx.x) + "," +
                      std::to_string(blockIdx.y) + "," + std::to_string(blockIdx.z) + ")";
            return;
        }
        if (!released && !ran) {
            l.error = deadlock_report(l);
            return;
        }
    }
}

template <class... P, size_t... I>
inline void invoke(void (*kernel)(P...), void** args, std::index_sequence<I...>) {
    kernel(*static_cast<P*>(args[I])...);
}

// Run `kernel` over the whole grid. Returns 0, or 1 with the reason in `err`.
// Launches of one library are serialised: its block-scheduling globals and its
// `static` shared memory belong to one launch at a time (ctypes calls from several
// Python threads may arrive concurrently). One lock for every kernel of the
// library, so not a static inside the launch template (one per signature).
inline std::mutex& launch_lock() {
    static std::mutex lock;
    return lock;
}

template <class... P>
inline int launch(void (*kernel)(P...), const unsigned* grid, const unsigned* block, void** args,
                  int schedule, unsigned long long seed, char* err, int err_len) {
    std::lock_guard<std::mutex> hold(launch_lock());
    Launch l;
    l.threads = int(block[0] * block[1] * block[2]);
    if (l.threads < 1 || l.threads > 1024) {
        std::snprintf(err, err_len, "block of %d threads (CUDA allows 1..1024)", l.threads);
        return 1;
    }
    l.fibers.resize(l.threads);
    l.stacks.reset(new char[size_t(l.threads) * kStackBytes]);
    l.exchange.assign(l.threads, 0);
    l.body = [&] { invoke(kernel, args, std::index_sequence_for<P...>{}); };
    active() = &l;
    std::mt19937_64 rng(seed);
    gridDim = dim3(grid[0], grid[1], grid[2]);
    blockDim = dim3(block[0], block[1], block[2]);
    const int blocks = int(grid[0] * grid[1] * grid[2]);
    for (int b : order(blocks, schedule, rng)) {
        blockIdx = dim3(b % grid[0], b / grid[0] % grid[1], b / (grid[0] * grid[1]));
        run_block(l, schedule, rng);
        if (!l.error.empty()) break;
    }
    active() = nullptr;
    if (l.error.empty()) return 0;
    std::snprintf(err, err_len, "%s", l.error.c_str());
    return 1;
}

}  // namespace soniq_emu

// ------------------------------------------------------------ CUDA device API

#define __syncthreads() ::soniq_emu::syncthreads(__LINE__, __COUNTER__)

static inline void __syncwarp(unsigned mask = 0xffffffffu) { ::soniq_emu::warp_sync(mask); }

template <class T>
static inline T __shfl_sync(unsigned mask, T v, int src, int width = 32) {
    const int lane = ::soniq_emu::lane_of(::soniq_emu::self_index());
    return ::soniq_emu::exchange(mask, v, (lane & ~(width - 1)) + (src & (width - 1)));
}

template <class T>
static inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
    const int lane = ::soniq_emu::lane_of(::soniq_emu::self_index());
    const int src = lane + int(delta);
    return ::soniq_emu::exchange(mask, v, (src & ~(width - 1)) == (lane & ~(width - 1)) ? src : lane);
}

template <class T>
static inline T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
    const int lane = ::soniq_emu::lane_of(::soniq_emu::self_index());
    const int src = lane - int(delta);
    return ::soniq_emu::exchange(mask, v, src >= (lane & ~(width - 1)) ? src : lane);
}

template <class T>
static inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
    const int lane = ::soniq_emu::lane_of(::soniq_emu::self_index());
    const int src = lane ^ lane_mask;
    return ::soniq_emu::exchange(mask, v, (src & ~(width - 1)) == (lane & ~(width - 1)) ? src : lane);
}

static inline unsigned __ballot_sync(unsigned mask, int pred) { return ::soniq_emu::vote(mask, pred != 0); }
static inline int __any_sync(unsigned mask, int pred) { return ::soniq_emu::vote(mask, pred != 0) != 0; }
static inline int __all_sync(unsigned mask, int pred) {
    return ::soniq_emu::vote(mask, pred != 0) == mask;
}

static inline int __popc(unsigned x) { return __builtin_popcount(x); }
static inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }

// Threads are fibers on one OS thread, so a plain read-modify-write is atomic.
static inline int atomicAdd(int* p, int v) { int old = *p; *p = old + v; return old; }
static inline unsigned atomicAdd(unsigned* p, unsigned v) { unsigned old = *p; *p = old + v; return old; }
static inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) {
    unsigned long long old = *p; *p = old + v; return old;
}

// Four-way byte dot products, as the hardware defines them.
static inline unsigned __dp4a(unsigned a, unsigned b, unsigned c) {
    for (int i = 0; i < 4; ++i) c += (a >> (8 * i) & 0xffu) * (b >> (8 * i) & 0xffu);
    return c;
}
static inline int __dp4a(int a, int b, int c) {
    for (int i = 0; i < 4; ++i) c += int(int8_t(a >> (8 * i))) * int(int8_t(b >> (8 * i)));
    return c;
}

// Correctly rounded float ops. The build uses -ffp-contract=off, so these are
// single IEEE operations, never fused, in round-to-nearest-even.
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __fadd_rn(float a, float b) { return a + b; }
static inline float __ll2float_rn(long long x) { return float(x); }
static inline int __float2int_rn(float x) { return int(std::nearbyint(x)); }
