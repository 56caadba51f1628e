/* memtop's byte sampler: a PYMEM_DOMAIN_MEM/OBJ allocator hook for CPython 3.9-3.15.
 *
 * Built without Python.h: one shared library serves every supported CPython. The stdlib
 * front end (memtop/agent/bytesampler.py) loads it with ctypes.PyDLL, so every control
 * call holds the GIL, and hands it the addresses of the C API functions it needs, so the
 * library resolves nothing itself and needs only mmap/munmap from libc.
 *
 * Sampling: a global countdown loses the size of every allocation; when it goes negative
 * the block is sampled and the countdown is redrawn from Exp(R). A block of S bytes is
 * then sampled with probability p = 1 - e^(-S/R), so S/p is an unbiased estimate of its
 * size and 1/p of its count. Per sample the library keeps the block's address, size and
 * an interned stack of (code object, instruction byte offset), up to 64 frames.
 *
 * Rules of the hook (see ../../../README.md, "Sampled mode"): it never calls malloc or the
 * Python allocator (tables grow with mmap), never runs Python code, never triggers the GC,
 * never DECREFs (code objects of sampled stacks are INCREF'd and released in stop()).
 * A hook context, once installed, is never freed and the library is never unloaded:
 * whoever hooked above us keeps our {ctx, functions} and may restore them at any time.
 */
#include <stddef.h>
#include <stdint.h>
#include <sys/mman.h>

#define MTS_API_VERSION 1
#define MAX_FRAMES 64
#define POOL_SIZE 4096
#define HOOK_MAGIC 0x6d656d746f707331ULL
#define TOMBSTONE ((uintptr_t)1)
#define NO_STACK 0xffffffffu

enum { DOMAIN_RAW = 0, DOMAIN_MEM = 1, DOMAIN_OBJ = 2 };

typedef struct {
    void *ctx;
    void *(*malloc)(void *, size_t);
    void *(*calloc)(void *, size_t, size_t);
    void *(*realloc)(void *, void *, size_t);
    void (*free)(void *, void *);
} allocator_t;

/* What the front end hands over at init: C API addresses from ctypes.pythonapi. */
typedef struct {
    uint64_t api_version;
    uint64_t hexversion;
    void (*get_allocator)(int, allocator_t *);
    void (*set_allocator)(int, allocator_t *);
    void *(*mem_malloc)(size_t);
    void (*mem_free)(void *);
    void *(*obj_malloc)(size_t);
    void (*obj_free)(void *);
    void (*incref)(void *);
    void (*decref)(void *);
    void *(*tstate_get)(void);
    void *code_type;
    uint64_t *runtime; /* &_PyRuntime on 3.13+ (its first field is debug_offsets) */
    void *(*interp_head)(void);
    void *(*interp_next)(void *);
    void *(*interp_main)(void);
} api_t;

enum { WALK_FRAME_OBJECTS = 1, WALK_CFRAME = 2, WALK_CURRENT_FRAME = 3 };

typedef struct {
    int kind;
    long ts_interp, ts_frame, cframe_current;
    long fr_back, fr_code, fr_instr, fr_owner, co_code;
    long lasti_scale;
    uintptr_t exec_mask;
    long interp_gil; /* offset of interp->ceval.gil, -1 when unknown */
} layout_t;

typedef struct hook {
    uint64_t magic;
    int domain;
    volatile int active;
    int reusable; /* we took it out of the chain ourselves: nobody holds it */
    allocator_t prev;
    allocator_t self;
} hook_t;

typedef struct {
    uintptr_t ptr;
    uint64_t size;
    uint32_t stack;
    uint32_t pad;
} sample_t;

typedef struct {
    void *code;
    int64_t offset;
} frame_t;

typedef struct {
    uint64_t hash;
    uint32_t first;
    uint32_t depth;
    uint64_t live;
    uint64_t total;
    double size, count, var_size, var_count;
} stack_t_;

typedef struct {
    void *base;
    size_t bytes;
} region_t;

static api_t api;
static layout_t lay;
static int inited;
static const char *error_text = "not initialised";
static int layout_fault;

static hook_t pool[POOL_SIZE];
static int pool_used;
static hook_t *current[3];
static int running;
static int check_interp;
static void *main_interp;

static int64_t countdown;
static double rate;
static uint64_t rng_state;
static volatile int probing;
static int probe_hits;

static region_t set_region;
static sample_t *set_slots;
static uint64_t set_cap, set_used, set_live;

/* How many sampled blocks live at addresses of each hash: counted up when a block is
 * sampled, down when it is forgotten. A free whose count is zero cannot be of a sampled
 * block and leaves at once, without the thread-state read and the set lookup: pymalloc
 * hands the same few addresses out again and again, so a set lookup per free made every
 * free pay for the few sampled blocks alive. Threads of another interpreter may read it
 * while the main interpreter's (which alone write it, under its GIL) change it: relaxed
 * atomics, and a non-zero count only leads on to the full check. */
#define FILTER_SLOTS (1u << 16)
#define FILTER_STUCK 0xFFFFu /* counts this high stay: never a wrong zero */
static uint16_t filter[FILTER_SLOTS];

static inline uint32_t filter_slot(uintptr_t ptr)
{
    return (uint32_t)((((uint64_t)ptr >> 4) * 0xD6E8FEB86659FD93ULL) >> (64 - 16));
}

static inline void filter_add(uintptr_t ptr)
{
    uint16_t *c = &filter[filter_slot(ptr)];
    uint16_t v = __atomic_load_n(c, __ATOMIC_RELAXED);
    if (v != FILTER_STUCK)
        __atomic_store_n(c, (uint16_t)(v + 1), __ATOMIC_RELAXED);
}

static inline void filter_remove(uintptr_t ptr)
{
    uint16_t *c = &filter[filter_slot(ptr)];
    uint16_t v = __atomic_load_n(c, __ATOMIC_RELAXED);
    if (v != 0 && v != FILTER_STUCK)
        __atomic_store_n(c, (uint16_t)(v - 1), __ATOMIC_RELAXED);
}

static inline int filter_may_hold(uintptr_t ptr)
{
    return __atomic_load_n(&filter[filter_slot(ptr)], __ATOMIC_RELAXED) != 0;
}

static void filter_clear(void)
{
    for (uint32_t i = 0; i < FILTER_SLOTS; i++)
        __atomic_store_n(&filter[i], 0, __ATOMIC_RELAXED);
}

static region_t stack_region, frame_region, index_region;
static stack_t_ *stacks;
static frame_t *frames;
static uint32_t *stack_index;
static uint64_t stack_cap, stack_count, frame_cap, frame_count, index_cap;

static uint64_t dropped, walk_errors, sampled_total, foreign_skipped;

/* ---- small math without libm (keeps the library's glibc needs minimal) ---- */

static double exp_neg(double x) /* e^x for x <= 0 */
{
    if (x < -700.0)
        return 0.0;
    const double ln2 = 0.6931471805599453;
    long k = (long)(x / ln2 - 0.5);
    double r = x - (double)k * ln2, term = 1.0, sum = 1.0;
    for (int i = 1; i < 18; i++) {
        term *= r / i;
        sum += term;
    }
    union { double d; uint64_t u; } scale;
    scale.u = (uint64_t)(k + 1023) << 52;
    return sum * scale.d;
}

static double one_minus_exp_neg(double x) /* 1 - e^-x for x >= 0, accurate for small x */
{
    if (x < 1e-4)
        return x * (1.0 - x * (0.5 - x / 6.0));
    return 1.0 - exp_neg(-x);
}

static double log_unit(double u) /* ln(u) for 0 < u <= 1 */
{
    union { double d; uint64_t b; } v = {u};
    long e = (long)((v.b >> 52) & 0x7ff) - 1023;
    v.b = (v.b & 0x000fffffffffffffULL) | 0x3ff0000000000000ULL; /* mantissa in [1, 2) */
    double m = v.d, s = (m - 1.0) / (m + 1.0), s2 = s * s, term = s, sum = 0.0;
    for (int i = 1; i < 40; i += 2) {
        sum += term / i;
        term *= s2;
    }
    return 2.0 * sum + (double)e * 0.6931471805599453;
}

static double draw_exponential(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    uint64_t x = rng_state * 0x2545F4914F6CDD1DULL;
    double u = ((double)(x >> 11) + 1.0) * (1.0 / 9007199254740992.0);
    return -rate * log_unit(u);
}

static void redraw(void)
{
    double d = draw_exponential();
    countdown = d > 9.0e18 ? INT64_MAX : (int64_t)d;
}

/* ---- memory for the tables: mmap only ---- */

static void *map(size_t bytes)
{
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

static void unmap(region_t *r)
{
    if (r->base)
        munmap(r->base, r->bytes);
    r->base = NULL;
    r->bytes = 0;
}

static void copy_bytes(void *dst, const void *src, size_t n)
{
    unsigned char *d = dst;
    const unsigned char *s = src;
    while (n--)
        *d++ = *s++;
}

/* ---- the stack walk (read-only; never materialises frame objects) ---- */

static inline void *read_ptr(const void *base, long off)
{
    return *(void *const *)((const char *)base + off);
}

static int is_code(void *obj)
{
    return obj && ((uintptr_t)obj & 7) == 0 && read_ptr(obj, 8) == api.code_type;
}

static int walk(void *tstate, frame_t *out)
{
    int n = 0;
    if (!tstate)
        return 0;
    if (lay.kind == WALK_FRAME_OBJECTS) {
        for (void *f = read_ptr(tstate, lay.ts_frame); f && n < MAX_FRAMES; f = read_ptr(f, lay.fr_back)) {
            void *code = read_ptr(f, lay.fr_code);
            if (!is_code(code)) {
                walk_errors++;
                continue;
            }
            out[n].code = code;
            out[n].offset = (int64_t)*(const int *)((const char *)f + lay.fr_instr) * lay.lasti_scale;
            n++;
        }
    } else {
        void *f;
        if (lay.kind == WALK_CFRAME) {
            void *cframe = read_ptr(tstate, lay.ts_frame);
            f = cframe ? read_ptr(cframe, lay.cframe_current) : NULL;
        } else {
            f = read_ptr(tstate, lay.ts_frame);
        }
        for (; f && n < MAX_FRAMES; f = read_ptr(f, lay.fr_back)) {
            if (*((const unsigned char *)f + lay.fr_owner) >= 3) /* a C-stack shim frame */
                continue;
            void *code = (void *)((uintptr_t)read_ptr(f, lay.fr_code) & lay.exec_mask);
            if (!is_code(code)) {
                walk_errors++;
                continue;
            }
            const char *instr = read_ptr(f, lay.fr_instr);
            out[n].code = code;
            out[n].offset = (int64_t)(instr - ((const char *)code + lay.co_code));
            n++;
        }
    }
    if (layout_fault && n > 0) { /* tests: a wrong layout, seen as a missing frame */
        for (int i = 1; i < n; i++)
            out[i - 1] = out[i];
        n--;
    }
    return n;
}

/* ---- interned stacks ---- */

static uint64_t hash_frames(const frame_t *f, int n)
{
    uint64_t h = 0xcbf29ce484222325ULL ^ (uint64_t)n;
    for (int i = 0; i < n; i++) {
        h = (h ^ (uint64_t)(uintptr_t)f[i].code) * 0x100000001b3ULL;
        h = (h ^ (uint64_t)f[i].offset) * 0x100000001b3ULL;
        h ^= h >> 29;
    }
    return h ? h : 1;
}

static int grow_region(region_t *r, void **base, uint64_t *cap, uint64_t used, size_t item)
{
    uint64_t ncap = *cap ? *cap * 2 : 1024;
    void *p = map(ncap * item);
    if (!p)
        return -1;
    if (*base)
        copy_bytes(p, *base, used * item);
    unmap(r);
    r->base = p;
    r->bytes = ncap * item;
    *base = p;
    *cap = ncap;
    return 0;
}

static int rebuild_index(uint64_t ncap)
{
    if (ncap == index_cap && stack_index) { /* in place: needs no memory */
        for (uint64_t i = 0; i < ncap; i++)
            stack_index[i] = NO_STACK;
        for (uint64_t s = 0; s < stack_count; s++) {
            uint64_t j = stacks[s].hash & (ncap - 1);
            while (stack_index[j] != NO_STACK)
                j = (j + 1) & (ncap - 1);
            stack_index[j] = (uint32_t)s;
        }
        return 0;
    }
    region_t old = index_region;
    uint32_t *p = map(ncap * sizeof(uint32_t));
    if (!p)
        return -1;
    for (uint64_t i = 0; i < ncap; i++)
        p[i] = NO_STACK;
    for (uint64_t s = 0; s < stack_count; s++) {
        uint64_t j = stacks[s].hash & (ncap - 1);
        while (p[j] != NO_STACK)
            j = (j + 1) & (ncap - 1);
        p[j] = (uint32_t)s;
    }
    index_region.base = p;
    index_region.bytes = ncap * sizeof(uint32_t);
    stack_index = p;
    index_cap = ncap;
    unmap(&old);
    return 0;
}

static uint32_t intern_stack(const frame_t *f, int n)
{
    uint64_t h = hash_frames(f, n);
    if (index_cap) {
        uint64_t j = h & (index_cap - 1);
        for (; stack_index[j] != NO_STACK; j = (j + 1) & (index_cap - 1)) {
            stack_t_ *s = &stacks[stack_index[j]];
            if (s->hash != h || s->depth != (uint32_t)n)
                continue;
            int same = 1;
            for (int i = 0; i < n && same; i++)
                same = frames[s->first + i].code == f[i].code && frames[s->first + i].offset == f[i].offset;
            if (same)
                return stack_index[j];
        }
    }
    if (stack_count >= 0xfffffff0u)
        return NO_STACK;
    if (stack_count + 1 > index_cap / 2 && rebuild_index(index_cap ? index_cap * 2 : 2048) < 0)
        return NO_STACK;
    if (stack_count == stack_cap &&
        grow_region(&stack_region, (void **)&stacks, &stack_cap, stack_count, sizeof(stack_t_)) < 0)
        return NO_STACK;
    while (frame_count + (uint64_t)n > frame_cap)
        if (grow_region(&frame_region, (void **)&frames, &frame_cap, frame_count, sizeof(frame_t)) < 0)
            return NO_STACK;
    stack_t_ *s = &stacks[stack_count];
    s->hash = h;
    s->first = (uint32_t)frame_count;
    s->depth = (uint32_t)n;
    s->live = s->total = 0;
    s->size = s->count = s->var_size = s->var_count = 0.0;
    for (int i = 0; i < n; i++) {
        frames[frame_count + i] = f[i];
        api.incref(f[i].code); /* never allocates; released in release_stacks() */
    }
    frame_count += (uint64_t)n;
    uint64_t j = h & (index_cap - 1);
    while (stack_index[j] != NO_STACK)
        j = (j + 1) & (index_cap - 1);
    stack_index[j] = (uint32_t)stack_count;
    return (uint32_t)stack_count++;
}

/* ---- the set of sampled blocks (open addressing, tombstones, rebuilt at half load) ---- */

static inline uint64_t slot_of(uintptr_t ptr, uint64_t cap)
{
    return (((uint64_t)ptr >> 4) * 0x9E3779B97F4A7C15ULL >> 20) & (cap - 1);
}

static int rebuild_set(uint64_t ncap)
{
    region_t old = set_region;
    sample_t *oslots = set_slots;
    uint64_t ocap = set_cap;
    sample_t *p = map(ncap * sizeof(sample_t)); /* zero-filled: ptr 0 is an empty slot */
    if (!p)
        return -1;
    for (uint64_t i = 0; i < ocap; i++) {
        if (oslots[i].ptr <= TOMBSTONE)
            continue;
        uint64_t j = slot_of(oslots[i].ptr, ncap);
        while (p[j].ptr)
            j = (j + 1) & (ncap - 1);
        p[j] = oslots[i];
    }

    set_region.base = p;
    set_region.bytes = ncap * sizeof(sample_t);
    set_slots = p;
    set_cap = ncap;
    set_used = set_live;
    unmap(&old);
    return 0;
}

static void weights(uint64_t size, double *w_size, double *w_count, double *v_size, double *v_count)
{
    double p = one_minus_exp_neg((double)size / rate);
    double q = 1.0 - p;
    *w_count = 1.0 / p;
    *w_size = (double)size / p;
    /* unbiased variance estimates of the Horvitz-Thompson sums, per sampled block */
    *v_count = q / (p * p);
    *v_size = (double)size * (double)size * q / (p * p);
}

static void account(uint32_t stack, uint64_t size, int sign)
{
    double ws, wc, vs, vc;
    stack_t_ *s = &stacks[stack];
    weights(size, &ws, &wc, &vs, &vc);
    if (sign > 0) {
        s->live++;
        s->total++;
        s->size += ws;
        s->count += wc;
        s->var_size += vs;
        s->var_count += vc;
    } else {
        s->live--;
        if (s->live == 0) { /* exact zero, no rounding residue */
            s->size = s->count = s->var_size = s->var_count = 0.0;
        } else {
            s->size -= ws;
            s->count -= wc;
            s->var_size -= vs;
            s->var_count -= vc;
        }
    }
}

static void forget(uintptr_t ptr)
{
    uint64_t j = slot_of(ptr, set_cap);
    for (; set_slots[j].ptr; j = (j + 1) & (set_cap - 1)) {
        if (set_slots[j].ptr == ptr) {
            filter_remove(ptr);
            account(set_slots[j].stack, set_slots[j].size, -1);
            set_slots[j].ptr = TOMBSTONE;
            set_live--;
            return;
        }
    }
}

static int foreign_thread(void *tstate)
{
    return check_interp && tstate && read_ptr(tstate, lay.ts_interp) != main_interp;
}

static void take_sample(hook_t *h, void *ptr, size_t size)
{
    if (probing) {
        probe_hits |= 1 << h->domain;
        countdown = -1;
        return;
    }
    redraw();
    void *tstate = api.tstate_get();
    if (foreign_thread(tstate)) { /* another interpreter: its threads may run concurrently */
        foreign_skipped++;
        return;
    }
    if (set_live && set_cap)
        forget((uintptr_t)ptr); /* a block we never saw freed (freed while unhooked) */
    if ((set_used + 1) * 2 > set_cap && rebuild_set(set_cap && set_live * 4 < set_cap ? set_cap : (set_cap ? set_cap * 2 : 4096)) < 0) {
        dropped++;
        return;
    }
    frame_t stack[MAX_FRAMES];
    int n = walk(tstate, stack);
    uint32_t sid = intern_stack(stack, n);
    if (sid == NO_STACK) {
        dropped++;
        return;
    }
    uint64_t j = slot_of((uintptr_t)ptr, set_cap);
    while (set_slots[j].ptr > TOMBSTONE)
        j = (j + 1) & (set_cap - 1);
    if (set_slots[j].ptr == 0)
        set_used++;
    set_slots[j].ptr = (uintptr_t)ptr;
    set_slots[j].size = size;
    set_slots[j].stack = sid;
    filter_add((uintptr_t)ptr);
    set_live++;
    sampled_total++;
    account(sid, size, +1);
}

static inline void on_free(void *ptr)
{
    if (set_live && ptr && filter_may_hold((uintptr_t)ptr) &&
        !foreign_thread(check_interp ? api.tstate_get() : NULL))
        forget((uintptr_t)ptr);
}

/* ---- the hook functions ---- */

static void *hook_malloc(void *ctx, size_t size)
{
    hook_t *h = ctx;
    void *p = h->prev.malloc(h->prev.ctx, size);
    if (h->active && p && (countdown -= (int64_t)size) < 0)
        take_sample(h, p, size);
    return p;
}

static void *hook_calloc(void *ctx, size_t nelem, size_t elsize)
{
    hook_t *h = ctx;
    void *p = h->prev.calloc(h->prev.ctx, nelem, elsize);
    if (h->active && p && (countdown -= (int64_t)(nelem * elsize)) < 0)
        take_sample(h, p, nelem * elsize);
    return p;
}

static void *hook_realloc(void *ctx, void *ptr, size_t size)
{
    hook_t *h = ctx;
    void *p = h->prev.realloc(h->prev.ctx, ptr, size);
    if (!h->active || !p)
        return p;
    on_free(ptr);
    if ((countdown -= (int64_t)size) < 0)
        take_sample(h, p, size);
    return p;
}

static void hook_free(void *ctx, void *ptr)
{
    hook_t *h = ctx;
    if (h->active)
        on_free(ptr);
    h->prev.free(h->prev.ctx, ptr);
}

static int is_our_hook(const allocator_t *a)
{
    hook_t *h = a->ctx;
    return a->malloc == hook_malloc && h >= pool && h < pool + POOL_SIZE && h->magic == HOOK_MAGIC;
}

/* ---- state reset ---- */

static uint64_t release_stacks(void)
{
    /* Detach the tables first: a DECREF may free a code object, which re-enters the
     * allocator chain and must find a consistent, empty state. */
    region_t fr = frame_region;
    frame_t *fs = frames;
    uint64_t nf = frame_count;
    unmap(&set_region);
    unmap(&stack_region);
    unmap(&index_region);
    set_slots = NULL;
    set_cap = set_used = set_live = 0;
    filter_clear();
    stacks = NULL;
    stack_index = NULL;
    stack_cap = stack_count = index_cap = 0;
    frame_region.base = NULL;
    frame_region.bytes = 0;
    frames = NULL;
    frame_cap = frame_count = 0;
    for (uint64_t i = 0; i < nf; i++)
        api.decref(fs[i].code);
    unmap(&fr);
    return nf;
}

/* ---- layouts ---- */

static int set_layout_from_headers(unsigned minor)
{
    layout_t l = {0};
    l.ts_interp = 16;
    l.exec_mask = ~(uintptr_t)0;
    l.interp_gil = -1;
    l.lasti_scale = 1;
    switch (minor) {
    case 9:  /* tstate->frame, PyFrameObject.f_back/f_code/f_lasti (bytes) */
        l.kind = WALK_FRAME_OBJECTS; l.ts_frame = 24; l.fr_back = 24; l.fr_code = 32; l.fr_instr = 104;
        break;
    case 10: /* f_lasti counts code units */
        l.kind = WALK_FRAME_OBJECTS; l.ts_frame = 24; l.fr_back = 24; l.fr_code = 32; l.fr_instr = 96;
        l.lasti_scale = 2;
        break;
    case 11: /* tstate->cframe->current_frame, _PyInterpreterFrame */
        l.kind = WALK_CFRAME; l.ts_frame = 56; l.cframe_current = 8;
        l.fr_code = 32; l.fr_back = 48; l.fr_instr = 56; l.fr_owner = 69; l.co_code = 184;
        break;
    case 12:
        l.kind = WALK_CFRAME; l.ts_frame = 56; l.cframe_current = 0;
        l.fr_code = 0; l.fr_back = 8; l.fr_instr = 56; l.fr_owner = 70; l.co_code = 192;
        break;
    default:
        return -1;
    }
    lay = l;
    return 0;
}

/* _PyRuntime.debug_offsets (3.13+): not stable across minors, so word indices per minor. */
static int set_layout_from_debug_offsets(unsigned minor)
{
    const uint64_t *d = api.runtime;
    long ts, fr, co, ob, gil;
    switch (minor) {
    case 13: ts = 19; fr = 28; co = 34; ob = 44; gil = 14; break;
    case 14: ts = 22; fr = 31; co = 39; ob = 50; gil = 15; break;
    case 15: ts = 22; fr = 39; co = 47; ob = 58; gil = 15; break;
    default: return -1;
    }
    if (!d || d[0] != 0x7970677562656478ULL) { /* "xdebugpy" */
        error_text = "_PyRuntime.debug_offsets not found (cookie missing)";
        return -2;
    }
    if ((d[1] >> 16) != (0x300u | minor)) {
        error_text = "_PyRuntime.debug_offsets is for another Python version";
        return -2;
    }
    if (d[2]) {
        error_text = "free-threaded build (no GIL): the sampler needs the GIL";
        return -2;
    }
    if (d[ob] != 16 || d[ob + 1] != 8) {
        error_text = "unusual object header (a Py_TRACE_REFS build?)";
        return -2;
    }
    uint64_t ts_size = d[ts], fr_size = d[fr], co_size = d[co];
    if (ts_size == 0 || ts_size > 65536 || d[ts + 3] + 8 > ts_size || d[ts + 4] + 8 > ts_size ||
        fr_size == 0 || fr_size > 4096 || d[fr + 1] + 8 > fr_size || d[fr + 2] + 8 > fr_size ||
        d[fr + 3] + 8 > fr_size || d[fr + 5] >= fr_size || co_size == 0 || co_size > 4096 ||
        d[co + 9] > co_size || d[6 + 0] == 0 || d[gil] + 8 > d[6]) {
        error_text = "_PyRuntime.debug_offsets holds implausible values";
        return -2;
    }
    layout_t l = {0};
    l.kind = WALK_CURRENT_FRAME;
    l.ts_interp = (long)d[ts + 3];
    l.ts_frame = (long)d[ts + 4];
    l.fr_back = (long)d[fr + 1];
    l.fr_code = (long)d[fr + 2];
    l.fr_instr = (long)d[fr + 3];
    l.fr_owner = (long)d[fr + 5];
    l.co_code = (long)d[co + 9];
    l.lasti_scale = 1;
    l.exec_mask = minor >= 14 ? ~(uintptr_t)3 : ~(uintptr_t)0; /* _PyStackRef tag bits */
    l.interp_gil = (long)d[gil];
    lay = l;
    return 0;
}

/* ---- the exported control API (called through ctypes.PyDLL, GIL held) ---- */

const char *mts_error(void) { return error_text; }

int mts_version(void) { return MTS_API_VERSION; }

int mts_init(const api_t *given)
{
    if (inited)
        return 0;
    if (!given || given->api_version != MTS_API_VERSION) {
        error_text = "front end and library versions differ";
        return -1;
    }
    api = *given;
    if (!api.get_allocator || !api.set_allocator || !api.mem_malloc || !api.mem_free ||
        !api.obj_malloc || !api.obj_free || !api.incref || !api.decref || !api.tstate_get ||
        !api.code_type || !api.interp_head || !api.interp_next || !api.interp_main) {
        error_text = "a C API function is missing";
        return -1;
    }
    unsigned major = (unsigned)(api.hexversion >> 24), minor = (unsigned)((api.hexversion >> 16) & 0xff);
    if (major != 3 || minor < 9 || minor > 15) {
        error_text = "unsupported Python version (3.9-3.15 are supported)";
        return -1;
    }
    int rc = minor <= 12 ? set_layout_from_headers(minor) : set_layout_from_debug_offsets(minor);
    if (rc < 0) {
        if (rc == -1)
            error_text = "no frame layout for this Python version";
        return -1;
    }
    check_interp = minor >= 12; /* interpreters with their own GIL exist from 3.12 */
    main_interp = api.interp_main();
    inited = 1;
    error_text = "";
    return 0;
}

/* Writes the calling thread's stack, innermost first, as (code, offset) pairs. */
int mts_walk(uint64_t *out, int max_frames)
{
    frame_t f[MAX_FRAMES];
    if (!inited)
        return -1;
    int n = walk(api.tstate_get(), f);
    for (int i = 0; i < n && i < max_frames; i++) {
        out[2 * i] = (uint64_t)(uintptr_t)f[i].code;
        out[2 * i + 1] = (uint64_t)f[i].offset;
    }
    return n;
}

void mts_set_layout_fault(int on) { layout_fault = on; }

/* 0 when it is safe to change the allocators; else sets error_text. */
static int interpreters_safe(void)
{
    void *head = api.interp_head();
    if (!head || !api.interp_next(head))
        return 0;
    if (lay.interp_gil < 0) {
        if (check_interp) {
            error_text = "several interpreters are running, and they may have their own GIL";
            return -1;
        }
        return 0; /* before 3.12 every interpreter shares the one GIL */
    }
    void *gil = read_ptr(head, lay.interp_gil);
    for (void *i = head; i; i = api.interp_next(i))
        if (read_ptr(i, lay.interp_gil) != gil) {
            error_text = "several interpreters with their own GIL are running";
            return -1;
        }
    return 0;
}

static hook_t *hook_domain(int domain)
{
    allocator_t cur;
    api.get_allocator(domain, &cur);
    hook_t *h;
    if (is_our_hook(&cur)) {
        h = cur.ctx; /* a pass-through of ours left on top: reuse it */
    } else {
        h = NULL;
        for (int i = 0; i < pool_used && !h; i++)
            if (pool[i].reusable)
                h = &pool[i];
        if (!h) {
            if (pool_used == POOL_SIZE)
                return NULL;
            h = &pool[pool_used++];
            h->magic = HOOK_MAGIC;
            h->self.ctx = h;
            h->self.malloc = hook_malloc;
            h->self.calloc = hook_calloc;
            h->self.realloc = hook_realloc;
            h->self.free = hook_free;
        }
        h->reusable = 0;
        h->domain = domain;
        h->prev = cur;
        api.set_allocator(domain, &h->self);
    }
    for (int i = 0; i < pool_used; i++)
        if (&pool[i] != h && pool[i].domain == domain && !pool[i].reusable)
            pool[i].active = 0;
    h->active = 1;
    return h;
}

int mts_start(double mean_bytes, uint64_t seed)
{
    if (!inited)
        return -1;
    if (running) {
        error_text = "the sampler is already running";
        return -1;
    }
    if (!(mean_bytes >= 1.0 && mean_bytes <= 1e18)) {
        error_text = "the rate must be between 1 byte and 1e18 bytes";
        return -1;
    }
    if (interpreters_safe() < 0)
        return -1;
    int needed = 0;
    for (int d = DOMAIN_MEM; d <= DOMAIN_OBJ; d++) {
        allocator_t cur;
        api.get_allocator(d, &cur);
        needed += !is_our_hook(&cur);
    }
    for (int i = 0; i < pool_used; i++)
        needed -= pool[i].reusable;
    if (pool_used + needed > POOL_SIZE) {
        error_text = "the program's tracemalloc.stop() unhooked the sampler too many times (4096 hooks used)";
        return -1;
    }
    release_stacks();
    dropped = walk_errors = sampled_total = foreign_skipped = 0;
    rate = mean_bytes;
    rng_state = seed ? seed : 0x853c49e6748fea9bULL;
    redraw();
    main_interp = api.interp_main();
    current[DOMAIN_MEM] = hook_domain(DOMAIN_MEM);
    current[DOMAIN_OBJ] = hook_domain(DOMAIN_OBJ);
    running = 1;
    error_text = "";
    return 0;
}

/* Bit 1: the MEM hook is reached, bit 2: the OBJ hook is reached. */
int mts_attached(void)
{
    if (!running)
        return 0;
    int64_t saved = countdown;
    probe_hits = 0;
    probing = 1;
    countdown = -1;
    api.mem_free(api.mem_malloc(1));
    countdown = -1;
    api.obj_free(api.obj_malloc(1));
    probing = 0;
    countdown = saved;
    return probe_hits >> 1;
}

/* Stops sampling, leaves the allocators as they were where it can (a pass-through where
 * something hooked above us), releases the code objects. Returns the references released. */
int64_t mts_stop(void)
{
    if (!inited || !running)
        return 0;
    running = 0;
    int may_set = interpreters_safe() == 0;
    for (int d = DOMAIN_MEM; d <= DOMAIN_OBJ; d++) {
        hook_t *h = current[d];
        current[d] = NULL;
        if (!h)
            continue;
        h->active = 0;
        allocator_t cur;
        api.get_allocator(d, &cur);
        if (may_set && cur.ctx == h && is_our_hook(&cur)) {
            api.set_allocator(d, &h->prev);
            h->reusable = 1;
        }
    }
    error_text = "";
    return (int64_t)release_stacks();
}

/* Drops the stacks no live sample uses and releases their code objects, keeping every
 * table consistent before the first DECREF (a code object's deallocation may allocate
 * and re-enter the hook). Returns the stacks dropped, or -1 when memory ran out. */
int64_t mts_compact(void)
{
    if (!inited || !stack_count)
        return 0;
    uint64_t live_stacks = 0, live_frames = 0, dead_frames = 0;
    for (uint64_t s = 0; s < stack_count; s++) {
        if (stacks[s].live) {
            live_stacks++;
            live_frames += stacks[s].depth;
        } else {
            dead_frames += stacks[s].depth;
        }
    }
    if (live_stacks == stack_count)
        return 0;
    region_t remap_region = {map(stack_count * sizeof(uint32_t) + 1), stack_count * sizeof(uint32_t) + 1};
    region_t dead_region = {map(dead_frames * sizeof(void *) + 1), dead_frames * sizeof(void *) + 1};
    uint64_t new_frame_cap = live_frames > 1024 ? live_frames : 1024;
    region_t new_frames = {map(new_frame_cap * sizeof(frame_t)), new_frame_cap * sizeof(frame_t)};
    if (!remap_region.base || !dead_region.base || !new_frames.base) {
        unmap(&remap_region);
        unmap(&dead_region);
        unmap(&new_frames);
        return -1;
    }
    uint32_t *remap = remap_region.base;
    void **dead = dead_region.base;
    frame_t *nf = new_frames.base;
    uint64_t kept = 0, nframes = 0, ndead = 0, old_count = stack_count;
    for (uint64_t s = 0; s < old_count; s++) {
        stack_t_ st = stacks[s];
        if (!st.live) {
            for (uint32_t i = 0; i < st.depth; i++)
                dead[ndead++] = frames[st.first + i].code;
            remap[s] = NO_STACK;
            continue;
        }
        copy_bytes(&nf[nframes], &frames[st.first], st.depth * sizeof(frame_t));
        st.first = (uint32_t)nframes;
        nframes += st.depth;
        stacks[kept] = st;
        remap[s] = (uint32_t)kept++;
    }
    for (uint64_t j = 0; j < set_cap; j++)
        if (set_slots[j].ptr > TOMBSTONE)
            set_slots[j].stack = remap[set_slots[j].stack];
    unmap(&frame_region);
    frame_region = new_frames;
    frames = nf;
    frame_cap = new_frame_cap;
    frame_count = nframes;
    stack_count = kept;
    rebuild_index(index_cap); /* same size: it cannot need more memory than it has */
    unmap(&remap_region);
    for (uint64_t i = 0; i < ndead; i++)
        api.decref(dead[i]);
    unmap(&dead_region);
    return (int64_t)(old_count - kept);
}

/* Header words of a snapshot. */
enum { H_WORDS = 12 };

/* Aggregated live samples per stack into buf (no allocation). Layout, in uint64 words:
 * header [words used, stacks written, live samples, samples taken, dropped, walk errors,
 *         rate (double), pool hooks used, table bytes, foreign-interpreter skips,
 *         stacks held (live or not), 0],
 * then per stack [live samples, size (double), count (double), size variance (double),
 *                 count variance (double), depth, then depth × (code address, offset)].
 * Returns the words needed; nothing is written past nwords (the caller retries bigger). */
int64_t mts_snapshot(uint64_t *buf, int64_t nwords)
{
    union { double d; uint64_t u; } cv;
    uint64_t need = H_WORDS, written = 0;
    for (uint64_t s = 0; s < stack_count; s++)
        if (stacks[s].live)
            need += 6 + 2 * (uint64_t)stacks[s].depth;
    if ((int64_t)need > nwords || !buf)
        return (int64_t)need;
    uint64_t w = H_WORDS;
    for (uint64_t s = 0; s < stack_count; s++) {
        stack_t_ *st = &stacks[s];
        if (!st->live)
            continue;
        buf[w++] = st->live;
        cv.d = st->size; buf[w++] = cv.u;
        cv.d = st->count; buf[w++] = cv.u;
        cv.d = st->var_size > 0 ? st->var_size : 0.0; buf[w++] = cv.u;
        cv.d = st->var_count > 0 ? st->var_count : 0.0; buf[w++] = cv.u;
        buf[w++] = st->depth;
        for (uint32_t i = 0; i < st->depth; i++) {
            buf[w++] = (uint64_t)(uintptr_t)frames[st->first + i].code;
            buf[w++] = (uint64_t)frames[st->first + i].offset;
        }
        written++;
    }
    buf[0] = w;
    buf[1] = written;
    buf[2] = set_live;
    buf[3] = sampled_total;
    buf[4] = dropped;
    buf[5] = walk_errors;
    cv.d = rate; buf[6] = cv.u;
    buf[7] = (uint64_t)pool_used;
    buf[8] = set_region.bytes + stack_region.bytes + frame_region.bytes + index_region.bytes;
    buf[9] = foreign_skipped;
    buf[10] = stack_count;
    buf[11] = 0;
    return (int64_t)w;
}
