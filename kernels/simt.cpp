/* The SIMT emulator's launcher, fibers and runtime calls (see simt.h).
 *
 * A launch runs blocks one after another on the calling OS thread. Each thread of the block is a
 * fiber with its own malloc'd stack; the scheduler resumes runnable fibers in thread order, and a
 * fiber runs until it reaches __syncthreads, a warp collective whose other lanes have not arrived
 * yet, or its end. On x86-64 a fiber switch is a dozen instructions (switch_stack below); elsewhere
 * it is ucontext's swapcontext, which also saves the signal mask with a system call per switch
 * (that made swapcontext 80 % of an emulated U-Net's time). The launch state lives in a
 * thread_local pointer, like the CUDA runtime's per-thread state; nothing else is global. */
#include "simt.h"

#include <stdarg.h>
#include <stdio.h>
#include <malloc.h>
#include <stdlib.h>
#include <time.h>
#if defined(__x86_64__) && !defined(I3EMU_UCONTEXT)   /* -DI3EMU_UCONTEXT: test the fallback */
#define I3EMU_ASM_SWITCH 1
#else
#include <ucontext.h>
#endif

#if defined(__SANITIZE_ADDRESS__)
#define I3EMU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define I3EMU_ASAN 1
#endif
#endif
#ifdef I3EMU_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

namespace i3emu {

enum FiberState { FIBER_READY, FIBER_RUNNING, FIBER_AT_BARRIER, FIBER_IN_WARP, FIBER_DONE };

/* A suspended execution context: a saved stack pointer (the registers are on that stack), or a
 * ucontext. */
#ifdef I3EMU_ASM_SWITCH
struct Context {
    void *sp;
};
#else
struct Context {
    ucontext_t uc;
};
#endif

struct Fiber {
    Context ctx;
    dim3 tid;
    int linear;
    FiberState state;
    void *stack;
    void *asan_fake_stack;
};

namespace {

#ifdef I3EMU_ASAN
const size_t FIBER_STACK_BYTES = 256 << 10;   /* ASan's redzones make frames larger */
#else
const size_t FIBER_STACK_BYTES = 64 << 10;
#endif
const size_t EMULATED_DEVICE_BYTES = (size_t)16 << 30;   /* the emulated card's memory: 16 GiB by default */

struct LaunchState {
    Launch pub;
    Context scheduler;
    const void *scheduler_stack;
    size_t scheduler_stack_bytes;
    kernel_thunk thunk;
    void *closure;
};

#ifdef I3EMU_ASM_SWITCH
/* i3emu_switch_stack(&from->sp, to->sp): pushes the callee-saved registers, MXCSR and the x87
 * control word, saves the stack pointer, switches to the other stack and pops its saved state. A
 * new fiber's stack is prepared by context_init to look like such a suspended switch. */
extern "C" void i3emu_switch_stack(void **save_sp, void *load_sp);
__asm__(".text\n"
        ".p2align 4\n"
        ".type i3emu_switch_stack,@function\n"
        "i3emu_switch_stack:\n"
        "    pushq %rbp\n"
        "    pushq %rbx\n"
        "    pushq %r12\n"
        "    pushq %r13\n"
        "    pushq %r14\n"
        "    pushq %r15\n"
        "    subq $8, %rsp\n"
        "    stmxcsr (%rsp)\n"
        "    fnstcw 4(%rsp)\n"
        "    movq %rsp, (%rdi)\n"
        "    movq %rsi, %rsp\n"
        "    ldmxcsr (%rsp)\n"
        "    fldcw 4(%rsp)\n"
        "    addq $8, %rsp\n"
        "    popq %r15\n"
        "    popq %r14\n"
        "    popq %r13\n"
        "    popq %r12\n"
        "    popq %rbx\n"
        "    popq %rbp\n"
        "    ret\n"
        ".size i3emu_switch_stack, .-i3emu_switch_stack\n");

void context_init(Context *c, void *stack, size_t bytes, void (*entry)()) {
    uintptr_t top = ((uintptr_t)stack + bytes) & ~(uintptr_t)15;
    uint64_t *frame = (uint64_t *)(top - 16);   /* entry's return address slot: 16-aligned, as after a call */
    frame[0] = (uint64_t)(uintptr_t)entry;
    frame[1] = 0;                                /* entry never returns */
    uint64_t *sp = frame - 7;                    /* control words, r15, r14, r13, r12, rbx, rbp */
    for (int i = 1; i < 7; i++) sp[i] = 0;
    uint32_t control[2] = {0, 0};
    __asm__ volatile("stmxcsr %0\n fnstcw %1" : "=m"(control[0]), "=m"(control[1]));
    memcpy(&sp[0], control, sizeof control);
    c->sp = sp;
}
void context_switch(Context *from, Context *to) { i3emu_switch_stack(&from->sp, to->sp); }
#else
void context_init(Context *c, void *stack, size_t bytes, void (*entry)()) {
    getcontext(&c->uc);
    c->uc.uc_stack.ss_sp = stack;
    c->uc.uc_stack.ss_size = bytes;
    c->uc.uc_link = nullptr;
    makecontext(&c->uc, entry, 0);
}
void context_switch(Context *from, Context *to) { swapcontext(&from->uc, &to->uc); }
#endif

thread_local LaunchState *tl_launch;
thread_local uint64_t tl_kernels_run;
thread_local cudaError_t tl_error;
thread_local char tl_error_detail[512];

void set_error(cudaError_t e, const char *fmt, va_list ap) {
    if (tl_error == cudaSuccess) {
        tl_error = e;
        vsnprintf(tl_error_detail, sizeof tl_error_detail, fmt, ap);
    }
}

void set_error_f(cudaError_t e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void set_error_f(cudaError_t e, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    set_error(e, fmt, ap);
    va_end(ap);
}

/* Fiber switches, announced to AddressSanitizer so that it tracks which stack is live. */
void switch_to_fiber(LaunchState *ls, Fiber *f) {
    ls->pub.current = f;
    f->state = FIBER_RUNNING;
#ifdef I3EMU_ASAN
    void *fake = nullptr;
    __sanitizer_start_switch_fiber(&fake, f->stack, FIBER_STACK_BYTES);
    context_switch(&ls->scheduler, &f->ctx);
    __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#else
    context_switch(&ls->scheduler, &f->ctx);
#endif
    ls->pub.current = nullptr;
}

void switch_to_scheduler(LaunchState *ls, Fiber *f) {
#ifdef I3EMU_ASAN
    /* A finished fiber passes no fake-stack slot: ASan may then drop its fake frames. */
    __sanitizer_start_switch_fiber(f->state == FIBER_DONE ? nullptr : &f->asan_fake_stack, ls->scheduler_stack,
                                   ls->scheduler_stack_bytes);
    context_switch(&f->ctx, &ls->scheduler);
    __sanitizer_finish_switch_fiber(f->asan_fake_stack, nullptr, nullptr);
#else
    context_switch(&f->ctx, &ls->scheduler);
#endif
}

void fiber_entry() {
    LaunchState *ls = tl_launch;
#ifdef I3EMU_ASAN
    __sanitizer_finish_switch_fiber(nullptr, &ls->scheduler_stack, &ls->scheduler_stack_bytes);
#endif
    Fiber *f = ls->pub.current;
    ls->thunk(ls->closure);
    f->state = FIBER_DONE;
    ls->pub.live--;
    if (ls->pub.at_barrier > 0)
        fail("thread (%u,%u,%u) of block (%u,%u,%u) returned while %d threads wait at __syncthreads", f->tid.x,
             f->tid.y, f->tid.z, ls->pub.block_idx.x, ls->pub.block_idx.y, ls->pub.block_idx.z,
             ls->pub.at_barrier);
    switch_to_scheduler(ls, f);
    abort();   /* a finished fiber is never resumed */
}

void yield_to_scheduler() {
    LaunchState *ls = tl_launch;
    switch_to_scheduler(ls, ls->pub.current);
}

/* reverse: resume fibers from the last thread to the first. A kernel that reads shared memory
 * another thread writes without a barrier in between sees different values in the two orders, so
 * running a test in both orders (I3RT_SIMT_ORDER=reverse) exposes such races. */
void run_block(LaunchState *ls, bool reverse) {
    Launch &L = ls->pub;
    for (int t = 0; t < L.n_threads; t++) {
        Fiber *f = &L.fibers[t];
        f->linear = t;
        f->tid = dim3(t % L.block.x, t / L.block.x % L.block.y, t / (L.block.x * L.block.y));
        f->state = FIBER_READY;
        f->asan_fake_stack = nullptr;
#ifdef I3EMU_ASAN
        __asan_unpoison_memory_region(f->stack, FIBER_STACK_BYTES);
#endif
        context_init(&f->ctx, f->stack, FIBER_STACK_BYTES, fiber_entry);
    }
    for (int w = 0; w < (L.n_threads + WARP_SIZE - 1) / WARP_SIZE; w++) L.warps[w].arrived = 0;
    L.live = L.n_threads;
    L.at_barrier = 0;
    while (L.live > 0 && !L.failed) {
        int ran = 0;
        for (int i = 0; i < L.n_threads && !L.failed; i++) {
            int t = reverse ? L.n_threads - 1 - i : i;
            if (L.fibers[t].state != FIBER_READY) continue;
            switch_to_fiber(ls, &L.fibers[t]);
            ran = 1;
        }
        if (!ran && L.live > 0 && !L.failed) {
            int in_warp = 0;
            for (int t = 0; t < L.n_threads; t++) in_warp += L.fibers[t].state == FIBER_IN_WARP;
            fail("deadlock in block (%u,%u,%u): %d threads wait at __syncthreads, %d in warp collectives "
                 "whose lanes never arrive",
                 L.block_idx.x, L.block_idx.y, L.block_idx.z, L.at_barrier, in_warp);
        }
    }
}

}  // namespace

Launch *current_launch() { return &tl_launch->pub; }
const dim3 &current_thread_idx() { return tl_launch->pub.current->tid; }
int current_linear_tid() { return tl_launch->pub.current->linear; }
int lane_id() { return tl_launch->pub.current->linear % WARP_SIZE; }

void fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    set_error(cudaErrorLaunchFailure, fmt, ap);
    va_end(ap);
    if (tl_launch) tl_launch->pub.failed = 1;
}

void barrier() {
    Launch &L = tl_launch->pub;
    Fiber *f = L.current;
    if (L.live < L.n_threads) {
        fail("__syncthreads in block (%u,%u,%u) after %d of its threads returned", L.block_idx.x, L.block_idx.y,
             L.block_idx.z, L.n_threads - L.live);
        return;
    }
    L.at_barrier++;
    if (L.at_barrier == L.live) {   /* the last to arrive releases everyone and goes on */
        for (int t = 0; t < L.n_threads; t++)
            if (L.fibers[t].state == FIBER_AT_BARRIER) L.fibers[t].state = FIBER_READY;
        L.at_barrier = 0;
        return;
    }
    f->state = FIBER_AT_BARRIER;
    yield_to_scheduler();
}

void warp_collective(uint32_t mask, const void *in, size_t in_bytes, void (*finalize)(Warp *, uint32_t),
                     void *out, size_t out_bytes) {
    Launch &L = tl_launch->pub;
    Fiber *f = L.current;
    int lane = f->linear % WARP_SIZE, first = f->linear - lane;
    int lanes = L.n_threads - first < WARP_SIZE ? L.n_threads - first : WARP_SIZE;
    uint32_t existing = lanes == WARP_SIZE ? 0xffffffffu : (1u << lanes) - 1;
    Warp *w = &L.warps[first / WARP_SIZE];
    mask &= existing;
    if (!(mask >> lane & 1)) {
        fail("thread %d calls a warp collective with a mask (0x%08x) that does not name its lane", f->linear, mask);
        return;
    }
    for (int l = 0; l < lanes; l++) {
        if ((mask >> l & 1) && L.fibers[first + l].state == FIBER_DONE) {
            fail("thread %d calls a warp collective whose mask (0x%08x) names lane %d, which returned", f->linear,
                 mask, l);
            return;
        }
    }
    if (in_bytes) memcpy(w->in[lane], in, in_bytes);
    w->arrived |= 1u << lane;
    if ((w->arrived & mask) == mask) {
        finalize(w, mask);
        w->arrived &= ~mask;
        for (int l = 0; l < lanes; l++)
            if ((mask >> l & 1) && l != lane) L.fibers[first + l].state = FIBER_READY;
    } else {
        f->state = FIBER_IN_WARP;
        yield_to_scheduler();
    }
    if (out_bytes) memcpy(out, w->out[lane], out_bytes);
}

cudaError_t launch(dim3 grid, dim3 block, size_t dynamic_smem, kernel_thunk thunk, void *closure) {
    uint64_t n_threads = (uint64_t)block.x * block.y * block.z;
    if (n_threads == 0 || n_threads > 1024 || block.z > 64 || grid.x == 0 || grid.y == 0 || grid.z == 0 ||
        grid.x > 0x7fffffffu || grid.y > 65535 || grid.z > 65535 || dynamic_smem > (227u << 10)) {
        set_error_f(cudaErrorInvalidConfiguration, "launch of grid (%u,%u,%u) block (%u,%u,%u) smem %zu bytes",
                    grid.x, grid.y, grid.z, block.x, block.y, block.z, dynamic_smem);
        return cudaErrorInvalidConfiguration;
    }
    if (tl_launch) {
        set_error_f(cudaErrorLaunchFailure, "kernel launch from inside a kernel");
        return cudaErrorLaunchFailure;
    }
    tl_kernels_run++;
    LaunchState ls = {};
    Launch &L = ls.pub;
    L.grid = grid;
    L.block = block;
    L.n_threads = (int)n_threads;
    ls.thunk = thunk;
    ls.closure = closure;
    int n_warps = (L.n_threads + WARP_SIZE - 1) / WARP_SIZE;
    L.fibers = (Fiber *)calloc((size_t)L.n_threads, sizeof(Fiber));
    L.warps = (Warp *)calloc((size_t)n_warps, sizeof(Warp));
    L.dynamic_smem = (unsigned char *)calloc(1, dynamic_smem + 16);
    int ok = L.fibers && L.warps && L.dynamic_smem;
    for (int t = 0; ok && t < L.n_threads; t++) ok = (L.fibers[t].stack = malloc(FIBER_STACK_BYTES)) != nullptr;
    if (!ok) {
        set_error_f(cudaErrorMemoryAllocation, "emulator: no memory for %d fiber stacks", L.n_threads);
    } else {
        const char *order = getenv("I3RT_SIMT_ORDER");
        bool reverse = order && strcmp(order, "reverse") == 0;
        tl_launch = &ls;
        for (unsigned z = 0; z < grid.z && !L.failed; z++)
            for (unsigned y = 0; y < grid.y && !L.failed; y++)
                for (unsigned x = 0; x < grid.x && !L.failed; x++) {
                    L.block_idx = dim3(x, y, z);
                    run_block(&ls, reverse);
                }
        tl_launch = nullptr;
    }
    for (int t = 0; L.fibers && t < L.n_threads; t++) free(L.fibers[t].stack);
    free(L.fibers);
    free(L.warps);
    free(L.dynamic_smem);
    if (!ok) return cudaErrorMemoryAllocation;
    return L.failed ? cudaErrorLaunchFailure : cudaSuccess;
}

/* ---- runtime calls: the device is host memory and every call is synchronous ----------------- */

cudaError_t cudaGetLastError() {
    cudaError_t e = tl_error;
    tl_error = cudaSuccess;
    return e;
}
cudaError_t cudaPeekAtLastError() { return tl_error; }
const char *error_detail() { return tl_error_detail; }

}  // namespace i3emu

extern "C" uint64_t i3emu_kernels_run(void) { return i3emu::tl_kernels_run; }

namespace i3emu {

const char *cudaGetErrorString(cudaError_t e) {
    switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorLaunchFailure: return "unspecified launch failure";
    }
    return "unknown error";
}

/* The device memory in use (malloc_usable_size of the live allocations) and its limit: 16 GiB, or
 * I3RT_EMULATED_DEVICE_MEMORY (bytes, with an optional K, M or G suffix) to test running out. The
 * device is process-wide, as a GPU is. Pinned host memory likewise: no limit, or
 * I3RT_EMULATED_PINNED_MEMORY (the operating system's limit on locked pages, on a real machine). */
static size_t device_bytes_in_use, pinned_bytes_in_use;

static size_t memory_limit(const char *variable, size_t otherwise) {
    const char *env = getenv(variable);
    if (!env || !*env) return otherwise;
    char *end;
    double v = strtod(env, &end);
    int shift = *end == 'K' || *end == 'k' ? 10 : *end == 'M' || *end == 'm' ? 20 : *end == 'G' || *end == 'g' ? 30 : 0;
    return v > 0 ? (size_t)(v * (double)((size_t)1 << shift)) : otherwise;
}

cudaError_t cudaMalloc(void **ptr, size_t bytes) {
    size_t limit = memory_limit("I3RT_EMULATED_DEVICE_MEMORY", EMULATED_DEVICE_BYTES);
    *ptr = bytes <= limit && device_bytes_in_use + bytes <= limit ? malloc(bytes ? bytes : 1) : nullptr;
    if (!*ptr) {
        set_error_f(cudaErrorMemoryAllocation,
                    "emulated device: cannot allocate %zu bytes (%zu of %zu bytes in use)", bytes,
                    device_bytes_in_use, limit);
        return cudaErrorMemoryAllocation;
    }
    device_bytes_in_use += malloc_usable_size(*ptr);
    return cudaSuccess;
}
cudaError_t cudaFree(void *ptr) {
    if (ptr) device_bytes_in_use -= malloc_usable_size(ptr);
    free(ptr);
    return cudaSuccess;
}
cudaError_t cudaHostAlloc(void **ptr, size_t bytes, unsigned) {
    size_t limit = memory_limit("I3RT_EMULATED_PINNED_MEMORY", SIZE_MAX);
    *ptr = bytes <= limit && pinned_bytes_in_use + bytes <= limit ? malloc(bytes ? bytes : 1) : nullptr;
    if (!*ptr) {
        set_error_f(cudaErrorMemoryAllocation, "emulated device: cannot pin %zu bytes of host memory (%zu of %zu in use)",
                    bytes, pinned_bytes_in_use, limit);
        return cudaErrorMemoryAllocation;
    }
    pinned_bytes_in_use += malloc_usable_size(*ptr);
    return cudaSuccess;
}
cudaError_t cudaFreeHost(void *ptr) {
    if (ptr) pinned_bytes_in_use -= malloc_usable_size(ptr);
    free(ptr);
    return cudaSuccess;
}
cudaError_t cudaMemcpy(void *dst, const void *src, size_t bytes, cudaMemcpyKind) {
    if (bytes) memmove(dst, src, bytes);
    return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind, cudaStream_t) {
    return cudaMemcpy(dst, src, bytes, kind);
}
cudaError_t cudaMemset(void *dst, int value, size_t bytes) {
    memset(dst, value, bytes);
    return cudaSuccess;
}
cudaError_t cudaMemsetAsync(void *dst, int value, size_t bytes, cudaStream_t) { return cudaMemset(dst, value, bytes); }
cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }

struct i3emu_graph {
    RecordedLaunch *launches;
    int n, cap;
};
struct i3emu_stream {
    i3emu_graph *capture; /* non-null while capturing */
};

static void graph_free(i3emu_graph *g) {
    for (int i = 0; g && i < g->n; i++) g->launches[i].destroy(g->launches[i].closure);
    if (g) free(g->launches);
    free(g);
}

bool stream_capturing(cudaStream_t s) { return s->capture != nullptr; }

cudaError_t record_launch(cudaStream_t s, const RecordedLaunch &r) {
    i3emu_graph *g = s->capture;
    if (g->n == g->cap) {
        int cap = g->cap ? 2 * g->cap : 64;
        RecordedLaunch *grown = (RecordedLaunch *)realloc(g->launches, (size_t)cap * sizeof *grown);
        if (!grown) {
            r.destroy(r.closure);
            set_error_f(cudaErrorMemoryAllocation, "emulator: no memory to record a launch");
            return cudaErrorMemoryAllocation;
        }
        g->launches = grown;
        g->cap = cap;
    }
    g->launches[g->n++] = r;
    return cudaSuccess;
}

cudaError_t cudaStreamBeginCapture(cudaStream_t s, cudaStreamCaptureMode) {
    if (!s || s->capture) {
        set_error_f(cudaErrorInvalidValue, "stream capture: no stream, or already capturing");
        return cudaErrorInvalidValue;
    }
    s->capture = (i3emu_graph *)calloc(1, sizeof(i3emu_graph));
    return s->capture ? cudaSuccess : cudaErrorMemoryAllocation;
}
cudaError_t cudaStreamEndCapture(cudaStream_t s, cudaGraph_t *graph) {
    *graph = nullptr;
    if (!s || !s->capture) {
        set_error_f(cudaErrorInvalidValue, "stream capture: not capturing");
        return cudaErrorInvalidValue;
    }
    *graph = s->capture;
    s->capture = nullptr;
    return cudaSuccess;
}
cudaError_t cudaGraphInstantiate(cudaGraphExec_t *exec, cudaGraph_t graph, unsigned long long) {
    *exec = (i3emu_graph *)calloc(1, sizeof(i3emu_graph));
    if (!*exec) return cudaErrorMemoryAllocation;
    **exec = *graph; /* the recording moves into the executable graph */
    graph->launches = nullptr;
    graph->n = graph->cap = 0;
    return cudaSuccess;
}
cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t) {
    for (int i = 0; i < exec->n; i++) {
        const RecordedLaunch &r = exec->launches[i];
        cudaError_t e = launch(r.grid, r.block, r.smem, r.thunk, r.closure);
        if (e != cudaSuccess) return e;
    }
    return cudaSuccess;
}
cudaError_t cudaGraphDestroy(cudaGraph_t graph) {
    graph_free(graph);
    return cudaSuccess;
}
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec) {
    graph_free(exec);
    return cudaSuccess;
}
struct i3emu_event {
    double ms;
};

cudaError_t cudaStreamCreate(cudaStream_t *s) {
    *s = (cudaStream_t)calloc(1, sizeof(i3emu_stream));
    return *s ? cudaSuccess : cudaErrorMemoryAllocation;
}
cudaError_t cudaStreamDestroy(cudaStream_t s) {
    if (s) graph_free(s->capture);
    free(s);
    return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
cudaError_t cudaEventCreate(cudaEvent_t *e) {
    *e = (cudaEvent_t)calloc(1, sizeof(i3emu_event));
    return *e ? cudaSuccess : cudaErrorMemoryAllocation;
}
cudaError_t cudaEventDestroy(cudaEvent_t e) {
    free(e);
    return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    e->ms = ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
    return cudaSuccess;
}
cudaError_t cudaEventSynchronize(cudaEvent_t) { return cudaSuccess; }
cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t start, cudaEvent_t end) {
    *ms = (float)(end->ms - start->ms);
    return cudaSuccess;
}

}  // namespace i3emu
