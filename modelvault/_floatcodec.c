/* modelvault._floatcodec: the float codec's planes (docs/format.md, section 2), compiled.
 *
 * A float of width w bytes (2: bf16 / fp16, 4: fp32), read little-endian, is rotated
 * left by r bits (1 <= r < 8w). With r = 1 the sign drops to bit 0 and the 8 bits after
 * it (the exponent of bf16 and fp32; the exponent and 3 mantissa bits of fp16) fill the
 * top byte; with r = 3 the top byte holds the exponent's 5 low bits and 3 mantissa bits,
 * and the exponent's 2 high bits (nearly constant in weights) join the sign in the
 * lowest byte, which then shrinks too. Plane 0 holds the top byte of every element,
 * plane j (1 <= j < w) byte j - 1. The planes that pay are entropy-coded: with zstd by
 * modelvault.core.floats (the first form of codec 3), or here with canonical Huffman
 * codes (the Huffman-planes sub-format, hencode / hdecode below).
 *
 *   split(data, width, rot) -> bytes: the w planes of n = len(data) // width elements,
 *                          back to back (plane 0 first), n * w bytes
 *   join(width, rot, head, planes, tail) -> bytes: head + the elements of the w planes
 *                          (each n bytes) + tail, the inverse of split
 *   probe(data, width=0) -> (byte bits, [(width, skip, plane bits at rot 1, at rot 3),
 *                          ...]): order-0 entropies (bits per byte) on a 16 KiB sample
 *                          of the plain bytes and of each plane, for width 4 and 2 (or
 *                          only ``width``), each at the skip (bytes before the first
 *                          whole element) that gives the smallest exponent plane
 *
 *   hencode(data, width, skip, rot, tries, keep) -> bytes: the whole codec-3 payload of
 *                          Huffman planes (skip -1: picked here)
 *   hdecode(payload, raw_len) -> bytes: its raw bytes; ValueError (one line saying what
 *                          is wrong) for any payload that does not follow the format
 *   hdecode_many(payloads, raw_lens, out) -> None: the payloads decoded into out end to
 *                          end in one call, or (i, what is wrong) for the first that does
 *                          not follow the format (a reader of many chunks takes and drops
 *                          the GIL once, not once a chunk)
 *
 * split, join, hencode, hdecode and hdecode_many run without the GIL, and so does probe's
 * counting.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

/* Where the compiler can target them, hot loops are also built for BMI2 (variable shifts
 * without flags: shlx / shrx) and AVX2 (32-byte vectors), chosen at import by CPUID. */
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define BMI2_DISPATCH 1
static int use_bmi2, use_avx2;
#define ALWAYS_INLINE __attribute__((always_inline)) inline
#else
#define ALWAYS_INLINE inline
#endif

static inline uint32_t
load32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static inline void
store32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define HOST_LE 0
#else
#define HOST_LE 1
#endif

/* Elements as w-byte little-endian integers, straight loads on little-endian hosts (the
 * loops below then vectorise). */
static inline uint16_t
load16le(const uint8_t *p)
{
    uint16_t v;
    if (HOST_LE) {
        memcpy(&v, p, 2);
        return v;
    }
    return (uint16_t)(p[0] | (p[1] << 8));
}

static inline uint32_t
load32le(const uint8_t *p)
{
    uint32_t v;
    if (HOST_LE) {
        memcpy(&v, p, 4);
        return v;
    }
    return load32(p);
}

static inline void
store16le(uint8_t *p, uint16_t v)
{
    if (HOST_LE)
        memcpy(p, &v, 2);
    else {
        p[0] = (uint8_t)v;
        p[1] = (uint8_t)(v >> 8);
    }
}

static inline void
store32le(uint8_t *p, uint32_t v)
{
    if (HOST_LE)
        memcpy(p, &v, 4);
    else
        store32(p, v);
}

static ALWAYS_INLINE void
split_body(const uint8_t *restrict src, Py_ssize_t n, int w, int r, uint8_t *restrict out)
{
    if (w == 4) {
        uint8_t *restrict e = out, *restrict a = out + n, *restrict b = out + 2 * n,
                          *restrict c = out + 3 * n;
        for (Py_ssize_t j = 0; j < n; j++) {
            uint32_t v = load32le(src + 4 * j);
            v = (v << r) | (v >> (32 - r));
            e[j] = (uint8_t)(v >> 24);
            a[j] = (uint8_t)v;
            b[j] = (uint8_t)(v >> 8);
            c[j] = (uint8_t)(v >> 16);
        }
    } else { /* w == 2 */
        uint8_t *restrict e = out, *restrict a = out + n;
        for (Py_ssize_t j = 0; j < n; j++) {
            uint16_t v = load16le(src + 2 * j);
            v = (uint16_t)((v << r) | (v >> (16 - r)));
            e[j] = (uint8_t)(v >> 8);
            a[j] = (uint8_t)v;
        }
    }
}

static ALWAYS_INLINE void
join_body(const uint8_t *const *p, Py_ssize_t n, int w, int r, uint8_t *restrict out)
{
    if (w == 4) {
        const uint8_t *restrict e = p[0], *restrict a = p[1], *restrict b = p[2],
                                *restrict c = p[3];
        for (Py_ssize_t j = 0; j < n; j++) {
            uint32_t v = (uint32_t)a[j] | ((uint32_t)b[j] << 8) | ((uint32_t)c[j] << 16) |
                         ((uint32_t)e[j] << 24);
            store32le(out + 4 * j, (v >> r) | (v << (32 - r)));
        }
    } else {
        const uint8_t *restrict e = p[0], *restrict a = p[1];
        for (Py_ssize_t j = 0; j < n; j++) {
            uint16_t v = (uint16_t)(a[j] | (e[j] << 8));
            store16le(out + 2 * j, (uint16_t)((v >> r) | (v << (16 - r))));
        }
    }
}

static void
split_plain(const uint8_t *src, Py_ssize_t n, int w, int r, uint8_t *out)
{
    split_body(src, n, w, r, out);
}

static void
join_plain(const uint8_t *const *p, Py_ssize_t n, int w, int r, uint8_t *out)
{
    join_body(p, n, w, r, out);
}

#ifdef BMI2_DISPATCH
__attribute__((target("avx2"))) static void
split_avx2(const uint8_t *src, Py_ssize_t n, int w, int r, uint8_t *out)
{
    split_body(src, n, w, r, out);
}

__attribute__((target("avx2"))) static void
join_avx2(const uint8_t *const *p, Py_ssize_t n, int w, int r, uint8_t *out)
{
    join_body(p, n, w, r, out);
}
#endif

static void
split_planes(const uint8_t *src, Py_ssize_t n, int w, int r, uint8_t *out)
{
#ifdef BMI2_DISPATCH
    if (use_avx2) {
        split_avx2(src, n, w, r, out);
        return;
    }
#endif
    split_plain(src, n, w, r, out);
}

static void
join_planes(const uint8_t *const *p, Py_ssize_t n, int w, int r, uint8_t *out)
{
#ifdef BMI2_DISPATCH
    if (use_avx2) {
        join_avx2(p, n, w, r, out);
        return;
    }
#endif
    join_plain(p, n, w, r, out);
}

static PyObject *
split(PyObject *self, PyObject *args)
{
    Py_buffer in;
    int w, r;
    if (!PyArg_ParseTuple(args, "y*ii:split", &in, &w, &r))
        return NULL;
    if ((w != 2 && w != 4) || r < 1 || r >= 8 * w) {
        PyBuffer_Release(&in);
        return PyErr_Format(PyExc_ValueError, "width %d rotation %d: width 2 or 4, "
                            "rotation 1 to 8 * width - 1 are supported", w, r);
    }
    Py_ssize_t n = in.len / w;
    PyObject *res = PyBytes_FromStringAndSize(NULL, n * w);
    if (res != NULL) {
        uint8_t *out = (uint8_t *)PyBytes_AS_STRING(res);
        Py_BEGIN_ALLOW_THREADS
        split_planes((const uint8_t *)in.buf, n, w, r, out);
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&in);
    return res;
}

static PyObject *
join(PyObject *self, PyObject *args)
{
    int w, r;
    Py_buffer head, tail;
    PyObject *planes_obj;
    if (!PyArg_ParseTuple(args, "iiy*Oy*:join", &w, &r, &head, &planes_obj, &tail))
        return NULL;
    PyObject *res = NULL, *seq = NULL;
    Py_buffer views[4];
    const uint8_t *p[4];
    Py_ssize_t got = 0, n = 0;
    if ((w != 2 && w != 4) || r < 1 || r >= 8 * w) {
        PyErr_Format(PyExc_ValueError, "width %d rotation %d: width 2 or 4, rotation 1 to "
                     "8 * width - 1 are supported", w, r);
        goto done;
    }
    seq = PySequence_Fast(planes_obj, "planes must be a sequence of buffers");
    if (seq == NULL)
        goto done;
    if (PySequence_Fast_GET_SIZE(seq) != w) {
        PyErr_Format(PyExc_ValueError, "%zd planes for width %d", PySequence_Fast_GET_SIZE(seq), w);
        goto done;
    }
    for (; got < w; got++) {
        if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(seq, got), &views[got], PyBUF_SIMPLE) < 0)
            goto done;
        if (got == 0)
            n = views[0].len;
        if (views[got].len != n) {
            PyErr_Format(PyExc_ValueError, "plane %zd is %zd bytes, plane 0 is %zd", got,
                         views[got].len, n);
            got++;
            goto done;
        }
        p[got] = (const uint8_t *)views[got].buf;
    }
    res = PyBytes_FromStringAndSize(NULL, head.len + n * w + tail.len);
    if (res != NULL) {
        uint8_t *out = (uint8_t *)PyBytes_AS_STRING(res);
        Py_BEGIN_ALLOW_THREADS
        memcpy(out, head.buf, head.len);
        join_planes(p, n, w, r, out + head.len);
        memcpy(out + head.len + n * w, tail.buf, tail.len);
        Py_END_ALLOW_THREADS
    }
done:
    for (Py_ssize_t i = 0; i < got; i++)
        PyBuffer_Release(&views[i]);
    Py_XDECREF(seq);
    PyBuffer_Release(&head);
    PyBuffer_Release(&tail);
    return res;
}

/* --- probe ------------------------------------------------------------------------ */

#define SLICES 4
#define SLICE 2048 /* bytes per slice of the sample; slices start at multiples of 4 */

#define SAMPLE_MAX (SLICES * SLICE)
static float clogc[SAMPLE_MAX + 1]; /* c * log2(c), filled at import */

static double
entropy(const uint32_t *h, uint32_t total)
{
    if (total == 0)
        return 8.0;
    double sum = 0.0;
    for (int i = 0; i < 256; i++)
        sum += clogc[h[i]];
    return log2((double)total) - sum / total;
}

/* The byte of plane ``k`` of the element at ``e`` (width w). */
static inline uint8_t
plane_byte(const uint8_t *e, int w, int r, int k)
{
    if (w == 4) {
        uint32_t v = load32(e);
        v = (v << r) | (v >> (32 - r));
        return k == 0 ? (uint8_t)(v >> 24) : (uint8_t)(v >> (8 * (k - 1)));
    }
    uint16_t v = (uint16_t)(e[0] | (e[1] << 8));
    v = (uint16_t)((v << r) | (v >> (16 - r)));
    return k == 0 ? (uint8_t)(v >> 8) : (uint8_t)v;
}

static void
slices(Py_ssize_t len, Py_ssize_t *start, Py_ssize_t *size, int *count)
{
    if (len <= SLICES * SLICE) {
        start[0] = 0;
        size[0] = len;
        *count = 1;
        return;
    }
    Py_ssize_t step = (len - SLICE) / (SLICES - 1);
    for (int k = 0; k < SLICES; k++) {
        start[k] = (k * step) / 4 * 4;
        size[k] = SLICE;
    }
    *count = SLICES;
}

static PyObject *
probe(PyObject *self, PyObject *args)
{
    Py_buffer in;
    int only = 0; /* 2 or 4: consider that width only; 0: both */
    if (!PyArg_ParseTuple(args, "y*|i:probe", &in, &only))
        return NULL;
    const uint8_t *d = (const uint8_t *)in.buf;
    Py_ssize_t start[SLICES], size[SLICES];
    int count;
    uint32_t h[256], total;
    double byte_bits, plane_bits[2][2][4]; /* [width 4, 2][rot 1, 3][plane] */
    int skips[2] = {0, 0};
    static const int widths[2] = {4, 2};
    slices(in.len, start, size, &count);
    Py_BEGIN_ALLOW_THREADS
    memset(h, 0, sizeof h);
    total = 0;
    for (int s = 0; s < count; s++)
        for (Py_ssize_t i = 0; i < size[s]; i++)
            h[d[start[s] + i]]++;
    for (int i = 0; i < 256; i++)
        total += h[i];
    byte_bits = entropy(h, total);
    for (int wi = 0; wi < 2; wi++) {
        int w = widths[wi];
        if (only && w != only)
            continue;
        double best = 1e9;
        for (int skip = 0; skip < w; skip++) { /* the skip whose exponent plane is smallest */
            memset(h, 0, sizeof h);
            total = 0;
            for (int s = 0; s < count; s++)
                for (Py_ssize_t i = start[s] + skip; i + w <= start[s] + size[s]; i += w) {
                    h[plane_byte(d + i, w, 1, 0)]++;
                    total++;
                }
            double bits = entropy(h, total);
            if (total && bits < best) {
                best = bits;
                skips[wi] = skip;
            }
        }
        for (int ri = 0; ri < 2; ri++) {
            uint32_t hp[4][256];
            int r = ri ? 3 : 1;
            memset(hp, 0, sizeof hp);
            total = 0;
            for (int s = 0; s < count; s++)
                for (Py_ssize_t i = start[s] + skips[wi]; i + w <= start[s] + size[s]; i += w) {
                    if (w == 4) {
                        uint32_t v = load32(d + i);
                        v = (v << r) | (v >> (32 - r));
                        hp[0][v >> 24]++;
                        hp[1][v & 255]++;
                        hp[2][(v >> 8) & 255]++;
                        hp[3][(v >> 16) & 255]++;
                    } else {
                        uint16_t v = (uint16_t)(d[i] | (d[i + 1] << 8));
                        v = (uint16_t)((v << r) | (v >> (16 - r)));
                        hp[0][v >> 8]++;
                        hp[1][v & 255]++;
                    }
                    total++;
                }
            for (int k = 0; k < w; k++)
                plane_bits[wi][ri][k] = entropy(hp[k], total);
        }
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&in);
    PyObject *out = PyList_New(0);
    if (out == NULL)
        return NULL;
    for (int wi = 0; wi < 2; wi++) {
        int w = widths[wi];
        if (only && w != only)
            continue;
        double(*b)[4] = plane_bits[wi];
        PyObject *item =
            w == 4 ? Py_BuildValue("(ii(dddd)(dddd))", w, skips[wi], b[0][0], b[0][1], b[0][2],
                                   b[0][3], b[1][0], b[1][1], b[1][2], b[1][3])
                   : Py_BuildValue("(ii(dd)(dd))", w, skips[wi], b[0][0], b[0][1], b[1][0],
                                   b[1][1]);
        if (item == NULL || PyList_Append(out, item) < 0) {
            Py_XDECREF(item);
            Py_DECREF(out);
            return NULL;
        }
        Py_DECREF(item);
    }
    return Py_BuildValue("(dN)", byte_bits, out);
}

/* --- scratch memory ------------------------------------------------------------------
 *
 * hencode and hdecode need a few buffers of about the chunk's size. Fresh ones each call
 * cost page faults (malloc hands large blocks back to the kernel); each thread keeps one
 * block instead, reused by its later calls and freed when the thread ends. Requests over
 * ARENA_MAX are plain malloc / free (a thread must not keep a huge block). */

#define ARENA_MAX ((size_t)8 << 20)

#if defined(_WIN32)
#define ARENA_TLS 0
#else
#define ARENA_TLS 1
#include <pthread.h>
static pthread_key_t arena_key;
static int arena_ok;
#endif

typedef struct {
    size_t cap;
} arena_hdr;

static void
arena_release(void *p)
{
    free(p);
}

/* A 64-byte aligned buffer of at least ``size`` bytes: this thread's block, or (above
 * ARENA_MAX, or without thread-local keys) a fresh one that arena_done frees. */
static uint8_t *
arena_get(size_t size, void **own)
{
    *own = NULL;
#if ARENA_TLS
    if (arena_ok && size <= ARENA_MAX) {
        arena_hdr *a = pthread_getspecific(arena_key);
        if (a == NULL || a->cap < size) {
            size_t cap = size + size / 4 + 4096;
            if (cap > ARENA_MAX)
                cap = ARENA_MAX;
            arena_hdr *b = malloc(sizeof(arena_hdr) + 64 + cap);
            if (b == NULL)
                return NULL;
            b->cap = cap;
            if (pthread_setspecific(arena_key, b) != 0) {
                free(b);
                return NULL;
            }
            free(a);
            a = b;
        }
        return (uint8_t *)(((uintptr_t)(a + 1) + 63) & ~(uintptr_t)63);
    }
#endif
    uint8_t *p = malloc(size + 64);
    *own = p;
    return p == NULL ? NULL : (uint8_t *)(((uintptr_t)p + 63) & ~(uintptr_t)63);
}

static void
arena_done(void *own)
{
    free(own);
}

/* Round up to 64 bytes: buffers carved from one block stay aligned. */
static inline size_t
al64(size_t n)
{
    return (n + 63) & ~(size_t)63;
}

/* --- Huffman planes (docs/format.md, section 2, "Huffman sub-format") ------------------
 *
 * A plane of n symbols is coded with a canonical Huffman code of at most HUF_MAX bits,
 * its symbols cut into 8 streams (stream k: symbols k*m .. min(n, (k+1)*m) - 1, with
 * m = ceil(n / 8)), each a bit string packed from the least significant bit of each byte,
 * each code written from its most significant bit, the last byte padded with zero bits.
 * Independent streams let the encoder and decoder run several chains at once.
 *
 * Sub-format 1 (mask bit 7; read only):
 *   plane := T u8 (0: constant plane, then the symbol u8; 1..12: the longest code)
 *            first u8, last u8, (last - first + 1) code lengths of 4 bits, low nibble
 *            first (0: symbol absent), stream lengths B0..B6 (u16 while ceil(n / 8) <=
 *            43690, else u32), streams 0..7
 * Sub-format 2 (mask bits 7 and 6; what hencode writes): a fifth header byte K (0..3);
 * plane 0's symbols are the top 8 + K bits of each rotated element (the exponent and K
 * mantissa bits, coded jointly), the plane below it (plane w - 1) keeps only its low
 * 8 - K bits, packed; every Huffman plane:
 *   plane := T u8 (0: constant plane, then the symbol u16; 1..12: the longest code)
 *            first u16, last u16, code lengths of symbols first..last as nibbles (0:
 *            absent, 1..12: a length, 15 z: z + 3 absent symbols), stream lengths as in
 *            sub-format 1, streams 0..7
 */

#define HUF_MAX 12
#define HUF_STREAMS 8 /* the format's; even: huf_encode codes streams in pairs */
_Static_assert(HUF_STREAMS % 2 == 0, "huf_encode codes the streams two at a time");
#define HUF_SMALL_M 43690 /* ceil(43690 * 12 / 8) = 65535 */
#define HUF_KMAX 2        /* mantissa bits coded with the exponent, at most */
#define HUF_NSYM (256 << HUF_KMAX)
#define HUF_SAMPLE 1024 /* bytes of each of 4 slices of a mantissa plane's sample */
#define HUF_FLAG 0x80   /* plane mask bit 7: the planes marked are Huffman-coded, not zstd */
#define HUF_V2 0x40     /* plane mask bit 6 (with bit 7): sub-format 2 */

typedef struct {
    uint32_t count;
    uint32_t sym;
} huf_item;

/* Sort by count, then symbol (shell sort: at most HUF_NSYM items, no calls). */
static void
huf_sort(huf_item *a, int m)
{
    static const int gaps[] = {701, 301, 132, 57, 23, 10, 4, 1};
    for (int g = 0; g < 8; g++) {
        int gap = gaps[g];
        for (int i = gap; i < m; i++) {
            huf_item x = a[i];
            uint64_t kx = (uint64_t)x.count << 16 | x.sym;
            int j = i;
            while (j >= gap && ((uint64_t)a[j - gap].count << 16 | a[j - gap].sym) > kx) {
                a[j] = a[j - gap];
                j -= gap;
            }
            a[j] = x;
        }
    }
}

/* Code lengths (at most HUF_MAX, a complete code) of the ``nsyms`` symbols counted in
 * ``hist``, into ``lens``; returns the number of distinct symbols. */
static int
huf_lengths(const uint32_t *hist, uint8_t *lens, int nsyms)
{
    huf_item items[HUF_NSYM];
    uint64_t weight[2 * HUF_NSYM];
    int parent[2 * HUF_NSYM], depth[2 * HUF_NSYM];
    int m = 0;
    memset(lens, 0, (size_t)nsyms);
    for (int s = 0; s < nsyms; s++)
        if (hist[s]) {
            items[m].count = hist[s];
            items[m].sym = (uint32_t)s;
            m++;
        }
    if (m < 2)
        return m;
    huf_sort(items, m);
    for (int i = 0; i < m; i++)
        weight[i] = items[i].count;
    int leaf = 0, node = m, end = m;
    for (int k = 0; k < m - 1; k++) {
        int pick[2];
        for (int j = 0; j < 2; j++) {
            if (leaf < m && (node >= end || weight[leaf] <= weight[node]))
                pick[j] = leaf++;
            else
                pick[j] = node++;
        }
        weight[end] = weight[pick[0]] + weight[pick[1]];
        parent[pick[0]] = parent[pick[1]] = end;
        end++;
    }
    depth[end - 1] = 0;
    for (int i = end - 2; i >= 0; i--)
        depth[i] = depth[parent[i]] + 1;
    uint32_t num[HUF_MAX + 2];
    memset(num, 0, sizeof num);
    for (int i = 0; i < m; i++)
        num[depth[i] > HUF_MAX ? HUF_MAX : depth[i]]++;
    uint32_t total = 0;
    for (int i = 1; i <= HUF_MAX; i++)
        total += num[i] << (HUF_MAX - i);
    while (total > (1u << HUF_MAX)) { /* make the clamped code complete again (miniz) */
        num[HUF_MAX]--;
        for (int i = HUF_MAX - 1; i > 0; i--)
            if (num[i]) {
                num[i]--;
                num[i + 1] += 2;
                break;
            }
        total--;
    }
    /* the most frequent symbols get the shortest codes */
    int at = m - 1;
    for (int len = 1; len <= HUF_MAX; len++)
        for (uint32_t c = 0; c < num[len]; c++)
            lens[items[at--].sym] = (uint8_t)len;
    return m;
}

static uint16_t rev12[1 << HUF_MAX]; /* 12-bit reversal, filled at import */

/* Canonical codes of ``lens`` (``nsyms`` symbols), bit-reversed for LSB-first streams:
 * codes[s] = reversed code | len << 16 (0 for absent symbols). */
static void
huf_codes(const uint8_t *lens, uint32_t *codes, int nsyms)
{
    uint32_t num[HUF_MAX + 1] = {0}, next[HUF_MAX + 2];
    int first = nsyms, last = -1;
    for (int s = 0; s < nsyms; s++)
        if (lens[s]) {
            num[lens[s]]++;
            if (first == nsyms)
                first = s;
            last = s;
        }
    uint32_t code = 0;
    for (int len = 1; len <= HUF_MAX; len++) {
        code = (code + num[len - 1]) << 1;
        next[len] = code;
    }
    memset(codes, 0, sizeof(uint32_t) * (size_t)nsyms);
    for (int s = first; s <= last; s++) {
        int len = lens[s];
        if (len)
            codes[s] = (uint32_t)(rev12[next[len]++] >> (HUF_MAX - len)) | ((uint32_t)len << 16);
    }
}

static inline void
store64(uint8_t *p, uint64_t v)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    memcpy(p, &v, 8);
}

static inline uint64_t
load64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    return v;
}

typedef struct {
    uint64_t buf;
    unsigned nb;
    uint8_t *p;
} bitw;

/* A code table indexed by the symbol as the encoder reads it (a byte, or a u16 whose low
 * bits below the coded ones are dropped by the table, not by a shift a symbol): the
 * bit-reversed code and its length apart, so a code is two loads, no unpacking. */
typedef struct {
    uint16_t code[HUF_NSYM];
    uint8_t len[HUF_NSYM];
} huf_enc;

#define PUT(w, t, s)                                                                       \
    do {                                                                                   \
        uint32_t s_ = (s);                                                                 \
        (w).buf |= (uint64_t)(t)->code[s_] << (w).nb;                                      \
        (w).nb += (t)->len[s_];                                                            \
    } while (0)
#define FLUSH(w)                                                                           \
    do {                                                                                   \
        store64((w).p, (w).buf);                                                           \
        (w).p += (w).nb >> 3;                                                              \
        (w).buf >>= (w).nb & ~7u;                                                          \
        (w).nb &= 7;                                                                       \
    } while (0)

/* One stream of ``c`` symbols: bytes (wide 0) or u16 (wide 1). */
#define STREAM_LOOP(T)                                                                     \
    do {                                                                                   \
        const T *sp = (const T *)src;                                                      \
        for (; j + 4 <= c; j += 4) { /* 4 codes of <= 12 bits: 48 + 7 bits in the buffer */ \
            PUT(x, t, sp[j]);                                                              \
            PUT(x, t, sp[j + 1]);                                                          \
            PUT(x, t, sp[j + 2]);                                                          \
            PUT(x, t, sp[j + 3]);                                                          \
            FLUSH(x);                                                                      \
        }                                                                                  \
        for (; j < c; j++) {                                                               \
            PUT(x, t, sp[j]);                                                              \
            FLUSH(x);                                                                      \
        }                                                                                  \
    } while (0)

static ALWAYS_INLINE bitw
encode_stream_body(bitw x, const void *src, int wide, Py_ssize_t c, const huf_enc *t)
{
    Py_ssize_t j = 0;
    if (wide)
        STREAM_LOOP(uint16_t);
    else
        STREAM_LOOP(uint8_t);
    FLUSH(x);
    if (x.nb) /* the last, partial byte */
        x.p += 1;
    return x;
}

/* Two streams of at least ``c`` symbols each (c a multiple of 4), their first c symbols
 * at once: two independent chains (each code's shift waits for the length before it).
 * Leaves both states for encode_stream to finish. */
#define PAIR_LOOP(T)                                                                       \
    do {                                                                                   \
        const T *p = (const T *)sa, *q = (const T *)sb;                                    \
        for (Py_ssize_t j = 0; j < c; j += 4) {                                            \
            PUT(x, t, p[j]);                                                               \
            PUT(y, t, q[j]);                                                               \
            PUT(x, t, p[j + 1]);                                                           \
            PUT(y, t, q[j + 1]);                                                           \
            PUT(x, t, p[j + 2]);                                                           \
            PUT(y, t, q[j + 2]);                                                           \
            PUT(x, t, p[j + 3]);                                                           \
            PUT(y, t, q[j + 3]);                                                           \
            FLUSH(x);                                                                      \
            FLUSH(y);                                                                      \
        }                                                                                  \
    } while (0)

static ALWAYS_INLINE void
encode_pair_body(bitw *a, bitw *b, const void *sa, const void *sb, int wide, Py_ssize_t c,
                 const huf_enc *t)
{
    bitw x = *a, y = *b;
    if (wide)
        PAIR_LOOP(uint16_t);
    else
        PAIR_LOOP(uint8_t);
    *a = x;
    *b = y;
}

#define ENC_ARGS bitw x, const void *src, int wide, Py_ssize_t c, const huf_enc *t
#define PAIR_ARGS                                                                          \
    bitw *a, bitw *b, const void *sa, const void *sb, int wide, Py_ssize_t c, const huf_enc *t

static bitw
encode_stream_plain(ENC_ARGS)
{
    return encode_stream_body(x, src, wide, c, t);
}

static void
encode_pair_plain(PAIR_ARGS)
{
    encode_pair_body(a, b, sa, sb, wide, c, t);
}

#ifdef BMI2_DISPATCH
__attribute__((target("bmi2"))) static bitw
encode_stream_bmi2(ENC_ARGS)
{
    return encode_stream_body(x, src, wide, c, t);
}

__attribute__((target("bmi2"))) static void
encode_pair_bmi2(PAIR_ARGS)
{
    encode_pair_body(a, b, sa, sb, wide, c, t);
}
#endif

static bitw
encode_stream(ENC_ARGS)
{
#ifdef BMI2_DISPATCH
    if (use_bmi2)
        return encode_stream_bmi2(x, src, wide, c, t);
#endif
    return encode_stream_plain(x, src, wide, c, t);
}

static void
encode_pair(PAIR_ARGS)
{
#ifdef BMI2_DISPATCH
    if (use_bmi2) {
        encode_pair_bmi2(a, b, sa, sb, wide, c, t);
        return;
    }
#endif
    encode_pair_plain(a, b, sa, sb, wide, c, t);
}

/* Bytes of each stream-length field of a plane of n symbols: 2 while a stream of
 * m = ceil(n / 8) codes of at most 12 bits surely fits in 65535 bytes, else 4. */
static inline int
huf_lenfield(Py_ssize_t n)
{
    return (n + HUF_STREAMS - 1) / HUF_STREAMS <= HUF_SMALL_M ? 2 : 4;
}

/* The code lengths lens[first..last] in sub-format 2 into ``o`` (NULL: only count),
 * a bit string packed from the least significant bit, each symbol's length against
 * ``prev`` (the last nonzero length before it, T at first): 0 = the same, 10 b = one
 * less (b = 0) or one more (b = 1), 110 = absent, 111 v (4 bits, LSB first) = length v
 * (1..12), or v = 0 then z (4 bits): z + 2 absent symbols. Returns the bytes taken. */
static Py_ssize_t
huf_table(const uint8_t *lens, int first, int last, int t, uint8_t *o)
{
    uint64_t bits = 0;
    uint32_t acc = 0;
    int nb = 0, prev = t;
#define PUTB(v, n)                                                                         \
    do {                                                                                   \
        acc |= (uint32_t)(v) << nb;                                                        \
        nb += (n);                                                                         \
        bits += (n);                                                                       \
        while (nb >= 8) {                                                                  \
            if (o)                                                                         \
                *o++ = (uint8_t)acc;                                                       \
            acc >>= 8;                                                                     \
            nb -= 8;                                                                       \
        }                                                                                  \
    } while (0)
    for (int s = first; s <= last;) {
        int l = lens[s];
        if (!l) {
            int run = 0;
            while (s + run <= last && !lens[s + run] && run < 17)
                run++;
            if (run >= 2) {
                PUTB(7 | 0 << 3 | (run - 2) << 7, 11);
                s += run;
            } else {
                PUTB(3, 3);
                s++;
            }
            continue;
        }
        if (l == prev)
            PUTB(0, 1);
        else if (l == prev - 1)
            PUTB(1, 3);
        else if (l == prev + 1)
            PUTB(5, 3);
        else
            PUTB(7 | l << 3, 7);
        prev = l;
        s++;
    }
    if (nb && o)
        *o++ = (uint8_t)acc;
#undef PUTB
    return (Py_ssize_t)((bits + 7) / 8);
}

/* Symbol range of ``lens``: *first, *last and the longest length (0: none). */
static int
huf_range(const uint8_t *lens, int nsyms, int *first, int *last)
{
    int t = 0;
    *first = nsyms;
    *last = -1;
    for (int s = 0; s < nsyms; s++)
        if (lens[s]) {
            if (lens[s] > t)
                t = lens[s];
            if (*first == nsyms)
                *first = s;
            *last = s;
        }
    return t;
}

/* Room for one stream of a plane of n symbols, written away from the output (huf_encode's
 * ``tmp``): ceil(n / 8) codes of at most HUF_MAX bits, and the 8 bytes a flush stores. */
static inline size_t
huf_tmp_size(Py_ssize_t n)
{
    Py_ssize_t m = (n + HUF_STREAMS - 1) / HUF_STREAMS;
    return (size_t)((m * HUF_MAX + 7) / 8 + 16);
}

/* Huffman-code the n symbols at ``plane`` (bytes, or u16 >> sh if wide) into ``out``
 * (sub-format 2, room: huf_size); returns the bytes written. ``tmp``: huf_tmp_size(n)
 * bytes of scratch. */
static Py_ssize_t
huf_encode(const void *plane, int wide, int sh, Py_ssize_t n, const uint8_t *lens,
           int nsyms, uint8_t *out, uint8_t *tmp)
{
    uint32_t codes[HUF_NSYM];
    huf_enc tab;
    int first, last;
    int t = huf_range(lens, nsyms, &first, &last);
    huf_codes(lens, codes, nsyms);
    for (int v = 0; v < (wide ? HUF_NSYM : nsyms); v++) { /* by the value read: u16 >> sh */
        uint32_t e = codes[wide ? v >> sh : v];
        tab.code[v] = (uint16_t)e;
        tab.len[v] = (uint8_t)(e >> 16);
    }
    uint8_t *o = out;
    *o++ = (uint8_t)t;
    store16le(o, (uint16_t)first);
    store16le(o + 2, (uint16_t)last);
    o += 4;
    o += huf_table(lens, first, last, t, o);
    uint8_t *lenfield = o;
    int lf = huf_lenfield(n);
    o += lf * (HUF_STREAMS - 1);
    Py_ssize_t m = (n + HUF_STREAMS - 1) / HUF_STREAMS;
    /* streams two at a time: the even one straight into ``out`` where it belongs (8
     * bytes of room past it: the next stream overwrites them), the odd one into ``tmp``,
     * then copied after it */
    for (int k = 0; k < HUF_STREAMS; k += 2) {
        Py_ssize_t c[2];
        const void *src[2];
        for (int i = 0; i < 2; i++) {
            Py_ssize_t ci = n - (k + i) * m;
            c[i] = ci < 0 ? 0 : (ci > m ? m : ci);
            Py_ssize_t at = c[i] > 0 ? (k + i) * m : 0;
            src[i] = wide ? (const void *)((const uint16_t *)plane + at)
                          : (const void *)((const uint8_t *)plane + at);
        }
        bitw x = {0, 0, o}, y = {0, 0, tmp};
        Py_ssize_t both = (c[0] < c[1] ? c[0] : c[1]) & ~(Py_ssize_t)3;
        if (both)
            encode_pair(&x, &y, src[0], src[1], wide, both, &tab);
        int step = wide ? 2 : 1;
        x = encode_stream(x, (const uint8_t *)src[0] + step * both, wide, c[0] - both, &tab);
        y = encode_stream(y, (const uint8_t *)src[1] + step * both, wide, c[1] - both, &tab);
        Py_ssize_t b[2] = {x.p - o, y.p - tmp};
        memcpy(o + b[0], tmp, (size_t)b[1]);
        for (int i = 0; i < 2; i++) {
            if (k + i < HUF_STREAMS - 1 && lf == 2)
                store16le(lenfield + 2 * (k + i), (uint16_t)b[i]);
            else if (k + i < HUF_STREAMS - 1)
                store32(lenfield + 4 * (k + i), (uint32_t)b[i]);
            o += b[i];
        }
    }
    return o - out;
}

/* Bytes of the plane coded with ``lens`` (counts ``hist``), header included: at least
 * what huf_encode writes, at most HUF_STREAMS more. */
static Py_ssize_t
huf_size(const uint32_t *hist, const uint8_t *lens, int nsyms, Py_ssize_t n)
{
    uint64_t bits = 0;
    int first, last;
    int t = huf_range(lens, nsyms, &first, &last);
    for (int s = first; s <= last; s++)
        bits += (uint64_t)hist[s] * lens[s];
    return 5 + huf_table(lens, first, last, t, NULL) + huf_lenfield(n) * (HUF_STREAMS - 1) +
           (Py_ssize_t)(bits / 8) + HUF_STREAMS;
}

static void
histogram(const uint8_t *p, Py_ssize_t n, uint32_t *hist)
{
    uint32_t h[8][256];
    memset(h, 0, sizeof h);
    Py_ssize_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t v = load64(p + i);
        h[0][v & 255]++;
        h[1][(v >> 8) & 255]++;
        h[2][(v >> 16) & 255]++;
        h[3][(v >> 24) & 255]++;
        h[4][(v >> 32) & 255]++;
        h[5][(v >> 40) & 255]++;
        h[6][(v >> 48) & 255]++;
        h[7][v >> 56]++;
    }
    for (; i < n; i++)
        h[0][p[i]]++;
    for (int s = 0; s < 256; s++)
        hist[s] = h[0][s] + h[1][s] + h[2][s] + h[3][s] + h[4][s] + h[5][s] + h[6][s] + h[7][s];
}

/* The skip (0 <= skip < w) whose plane 0 (rotation 1) has the least order-0 entropy on
 * two 1 KiB slices of ``d``, at a third and two thirds of it. */
static int
pick_skip(const uint8_t *d, Py_ssize_t len, int w)
{
    Py_ssize_t start[2], size = len < 1024 ? len : 1024;
    start[0] = (len / 3) / 4 * 4;
    start[1] = (2 * len / 3) / 4 * 4;
    if (start[1] + size > len)
        start[0] = start[1] = 0;
    int best = 0;
    double best_bits = 1e9;
    for (int skip = 0; skip < w; skip++) {
        uint32_t h[256], total = 0;
        memset(h, 0, sizeof h);
        for (int k = 0; k < 2; k++)
            for (Py_ssize_t i = start[k] + skip; i + w <= start[k] + size; i += w) {
                h[plane_byte(d + i, w, 1, 0)]++;
                total++;
            }
        double bits = entropy(h, total);
        if (total && bits < best_bits) {
            best_bits = bits;
            best = skip;
        }
    }
    return best;
}

/* The fused split: for n elements of width w rotated left by r, the top 8 + HUF_KMAX bits
 * into ``sym`` (u16) and counted in ``hist`` (HUF_NSYM counts), byte j - 1 into plane j
 * (1 <= j < w, at out + (j - 1) * n). One read of the elements. */
#define SPLIT_BLOCK 2048 /* elements split, then counted while their symbols are hot */

static ALWAYS_INLINE void
split_sym_body(const uint8_t *restrict src, Py_ssize_t n, int w, int r, uint16_t *restrict sym,
               uint8_t *restrict out, uint32_t *restrict hist)
{
    const int sh = 8 * w - 8 - HUF_KMAX;
    uint32_t h[4][HUF_NSYM];
    memset(h, 0, sizeof h);
    for (Py_ssize_t j0 = 0; j0 < n; j0 += SPLIT_BLOCK) {
        Py_ssize_t j1 = n - j0 < SPLIT_BLOCK ? n : j0 + SPLIT_BLOCK;
        if (w == 4) {
            uint8_t *restrict a = out, *restrict b = out + n, *restrict c = out + 2 * n;
            for (Py_ssize_t j = j0; j < j1; j++) {
                uint32_t v = load32le(src + 4 * j);
                v = (v << r) | (v >> (32 - r));
                sym[j] = (uint16_t)(v >> sh);
                a[j] = (uint8_t)v;
                b[j] = (uint8_t)(v >> 8);
                c[j] = (uint8_t)(v >> 16);
            }
        } else {
            uint8_t *restrict a = out;
            for (Py_ssize_t j = j0; j < j1; j++) {
                uint16_t v = load16le(src + 2 * j);
                v = (uint16_t)((v << r) | (v >> (16 - r)));
                sym[j] = (uint16_t)(v >> sh);
                a[j] = (uint8_t)v;
            }
        }
        /* the counts, four symbols a load into four tables (store-to-load stalls on
         * repeated symbols) */
        Py_ssize_t j = j0;
        for (; j + 4 <= j1; j += 4) {
            uint64_t q; /* native order: each 16-bit field is one symbol */
            memcpy(&q, sym + j, 8);
            h[0][q & 0xFFFF]++;
            h[1][(q >> 16) & 0xFFFF]++;
            h[2][(q >> 32) & 0xFFFF]++;
            h[3][q >> 48]++;
        }
        for (; j < j1; j++)
            h[0][sym[j]]++;
    }
    for (int s = 0; s < HUF_NSYM; s++)
        hist[s] = h[0][s] + h[1][s] + h[2][s] + h[3][s];
}

#define SPLIT_SYM_ARGS                                                                     \
    const uint8_t *src, Py_ssize_t n, int w, int r, uint16_t *sym, uint8_t *out, uint32_t *hist

static void
split_sym_plain(SPLIT_SYM_ARGS)
{
    split_sym_body(src, n, w, r, sym, out, hist);
}

#ifdef BMI2_DISPATCH
__attribute__((target("avx2"))) static void
split_sym_avx2(SPLIT_SYM_ARGS)
{
    split_sym_body(src, n, w, r, sym, out, hist);
}
#endif

static void
split_sym(SPLIT_SYM_ARGS)
{
#ifdef BMI2_DISPATCH
    if (use_avx2) {
        split_sym_avx2(src, n, w, r, sym, out, hist);
        return;
    }
#endif
    split_sym_plain(src, n, w, r, sym, out, hist);
}

/* Pack the low 8 - K bits of each of the n bytes of ``p`` as a little-endian bit string:
 * every 8 bytes give 8 - K bytes; returns ceil(n * (8 - K) / 8). ``o`` has 8 bytes of
 * room past that. */
#define PACK_BODY(EXTRACT)                                                                 \
    const int b = 8 - K;                                                                   \
    const uint64_t m = (1u << b) - 1, mm = m * 0x0101010101010101ull;                      \
    Py_ssize_t j = 0, at = 0;                                                              \
    for (; j + 8 <= n; j += 8) {                                                           \
        uint64_t v = load64(p + j), x;                                                     \
        EXTRACT;                                                                           \
        store64(o + at, x);                                                                \
        at += b;                                                                           \
    }                                                                                      \
    (void)mm;                                                                              \
    uint64_t x = 0;                                                                        \
    int nb = 0;                                                                            \
    for (; j < n; j++) {                                                                   \
        x |= (uint64_t)(p[j] & m) << nb;                                                   \
        nb += b;                                                                           \
    }                                                                                      \
    for (; nb > 0; nb -= 8) {                                                              \
        o[at++] = (uint8_t)x;                                                              \
        x >>= 8;                                                                           \
    }                                                                                      \
    return at;

#define EXTRACT_PLAIN                                                                      \
    x = 0;                                                                                 \
    for (int i = 0; i < 8; i++)                                                            \
        x |= ((v >> (8 * i)) & m) << (b * i)

static Py_ssize_t
pack_narrow_plain(const uint8_t *p, Py_ssize_t n, int K, uint8_t *o)
{
    PACK_BODY(EXTRACT_PLAIN)
}

/* Undo pack_narrow: the n values of 8 - K bits at ``s`` (len bytes) into bytes. */
#define UNPACK_BODY(DEPOSIT)                                                               \
    const int b = 8 - K;                                                                   \
    const uint64_t m = (1u << b) - 1, mm = m * 0x0101010101010101ull;                      \
    Py_ssize_t j = 0, at = 0;                                                              \
    for (; j + 8 <= n && at + 8 <= len; j += 8) {                                          \
        uint64_t v = load64(s + at), x;                                                    \
        DEPOSIT;                                                                           \
        store64(o + j, x);                                                                 \
        at += b;                                                                           \
    }                                                                                      \
    (void)mm;                                                                              \
    uint64_t buf = 0;                                                                      \
    int nb = 0;                                                                            \
    for (; j < n; j++) {                                                                   \
        while (nb < b) {                                                                   \
            buf |= (uint64_t)s[at++] << nb;                                                \
            nb += 8;                                                                       \
        }                                                                                  \
        o[j] = (uint8_t)(buf & m);                                                         \
        buf >>= b;                                                                         \
        nb -= b;                                                                           \
    }

#define DEPOSIT_PLAIN                                                                      \
    x = 0;                                                                                 \
    for (int i = 0; i < 8; i++)                                                            \
        x |= ((v >> (b * i)) & m) << (8 * i)

static void
unpack_narrow_plain(const uint8_t *s, Py_ssize_t len, Py_ssize_t n, int K, uint8_t *o)
{
    UNPACK_BODY(DEPOSIT_PLAIN)
}

#ifdef BMI2_DISPATCH
#include <immintrin.h>
__attribute__((target("bmi2"))) static Py_ssize_t
pack_narrow_bmi2(const uint8_t *p, Py_ssize_t n, int K, uint8_t *o)
{
    PACK_BODY(x = _pext_u64(v, mm))
}

__attribute__((target("bmi2"))) static void
unpack_narrow_bmi2(const uint8_t *s, Py_ssize_t len, Py_ssize_t n, int K, uint8_t *o)
{
    UNPACK_BODY(x = _pdep_u64(v, mm))
}
#endif

static Py_ssize_t
pack_narrow(const uint8_t *p, Py_ssize_t n, int K, uint8_t *o)
{
#ifdef BMI2_DISPATCH
    if (use_bmi2)
        return pack_narrow_bmi2(p, n, K, o);
#endif
    return pack_narrow_plain(p, n, K, o);
}

static void
unpack_narrow(const uint8_t *s, Py_ssize_t len, Py_ssize_t n, int K, uint8_t *o)
{
#ifdef BMI2_DISPATCH
    if (use_bmi2) {
        unpack_narrow_bmi2(s, len, n, K, o);
        return;
    }
#endif
    unpack_narrow_plain(s, len, n, K, o);
}

static int
narrow_pads_clean(const uint8_t *s, Py_ssize_t len, Py_ssize_t n, int K)
{
    uint64_t bits = (uint64_t)n * (uint64_t)(8 - K);
    int used = (int)(bits & 7);
    return !used || !(s[len - 1] >> used);
}

/* Plane 0 joined: elements y = sym << (8w - 8 - K) | plane w - 1 << (8w - 16) | ...,
 * rotated right by r. Bits of sym above its 8 + K leave the element's width and are
 * dropped (the decoder leaves its table entries' other bits there: GET2W). */
static ALWAYS_INLINE void
join_sym_body(const uint16_t *restrict sym, const uint8_t *const *p, Py_ssize_t n, int w, int r,
              int K, uint8_t *restrict out)
{
    const int sh = 8 * w - 8 - K;
    if (w == 4) {
        const uint8_t *restrict a = p[1], *restrict b = p[2], *restrict c = p[3];
        for (Py_ssize_t j = 0; j < n; j++) {
            uint32_t v = (uint32_t)a[j] | ((uint32_t)b[j] << 8) | ((uint32_t)c[j] << 16) |
                         ((uint32_t)sym[j] << sh);
            store32le(out + 4 * j, (v >> r) | (v << (32 - r)));
        }
    } else {
        const uint8_t *restrict a = p[1];
        for (Py_ssize_t j = 0; j < n; j++) {
            uint16_t v = (uint16_t)(a[j] | (sym[j] << sh));
            store16le(out + 2 * j, (uint16_t)((v >> r) | (v << (16 - r))));
        }
    }
}

#define JOIN_SYM_ARGS                                                                      \
    const uint16_t *sym, const uint8_t *const *p, Py_ssize_t n, int w, int r, int K, uint8_t *out

static void
join_sym_plain(JOIN_SYM_ARGS)
{
    join_sym_body(sym, p, n, w, r, K, out);
}

#ifdef BMI2_DISPATCH
__attribute__((target("avx2"))) static void
join_sym_avx2(JOIN_SYM_ARGS)
{
    join_sym_body(sym, p, n, w, r, K, out);
}
#endif

static void
join_sym(JOIN_SYM_ARGS)
{
#ifdef BMI2_DISPATCH
    if (use_avx2) {
        join_sym_avx2(sym, p, n, w, r, K, out);
        return;
    }
#endif
    join_sym_plain(sym, p, n, w, r, K, out);
}

/* Whether byte plane p (n bytes) may be worth Huffman-coding: not if a sample of four
 * 1 KiB slices has an order-0 entropy of at least 8 * keep / 1024 bits (noise is not
 * worth counting); else its counts, into hist. */
static int
plane_worth(const uint8_t *p, Py_ssize_t n, int keep, uint32_t *hist)
{
    if (n > 4 * HUF_SAMPLE) { /* one table: a sample is small, a memset of eight is not */
        Py_ssize_t step = (n - HUF_SAMPLE) / 3;
        memset(hist, 0, 256 * sizeof(uint32_t));
        for (int k = 0; k < 4; k++)
            for (Py_ssize_t i = 0; i < HUF_SAMPLE; i++)
                hist[p[k * step + i]]++;
        if (entropy(hist, 4 * HUF_SAMPLE) * 1024 >= 8.0 * keep)
            return 0;
    }
    histogram(p, n, hist);
    return 1;
}

/* Counts of ``nsyms`` symbols from counts of ``from`` symbols of more bits: symbol s
 * gathers s << g .. (s << g) + (1 << g) - 1 (the top bits). */
static void
fold_hist(const uint32_t *h, int from, uint32_t *out, int nsyms)
{
    int g = 0;
    while ((nsyms << g) < from)
        g++;
    for (int s = 0; s < nsyms; s++) {
        uint32_t c = 0;
        for (int i = 0; i < (1 << g); i++)
            c += h[(s << g) + i];
        out[s] = c;
    }
}

/* Stored bytes of plane w - 1 for a given K: the low 8 - K bits of each byte, Huffman
 * coded if counted (``count``; its byte counts in hb) and smaller, else packed raw. On
 * return hn holds the folded counts. */
static Py_ssize_t
narrow_cost(const uint32_t *hb, int count, int K, Py_ssize_t n, int keep, uint8_t *lens,
            uint32_t *hn)
{
    Py_ssize_t raw = K ? (n * (8 - K) + 7) / 8 : n;
    if (!count)
        return raw;
    int nsyms = 256 >> K;
    memset(hn, 0, sizeof(uint32_t) * (size_t)nsyms);
    for (int b = 0; b < 256; b++)
        hn[b & (nsyms - 1)] += hb[b];
    int distinct = huf_lengths(hn, lens, nsyms);
    Py_ssize_t size = distinct == 1 ? 3 : huf_size(hn, lens, nsyms, n);
    return size * 1024 < (Py_ssize_t)keep * raw ? size : raw;
}

/* hencode(data, width, skip, rot, tries, keep) -> the codec-3 payload, Huffman planes
 * (sub-format 2): plane 0 coded with the K (0..3) mantissa bits below the exponent that
 * give the smallest payload, plane i > 0 Huffman-coded when bit i of ``tries`` is set
 * and its coded size is below ``keep`` / 1024 of n, else stored raw (the narrow plane,
 * K > 0, always raw). ``skip`` -1: the encoder picks it (pick_skip). */
static PyObject *
hencode(PyObject *self, PyObject *args)
{
    Py_buffer in;
    int w, skip, r, tries, keep;
    if (!PyArg_ParseTuple(args, "y*iiiii:hencode", &in, &w, &skip, &r, &tries, &keep))
        return NULL;
    if ((w != 2 && w != 4) || r < 1 || r >= 8 * w || skip < -1 || skip >= w || keep < 0 ||
        keep > 1024) {
        PyBuffer_Release(&in);
        return PyErr_Format(PyExc_ValueError,
                            "float planes of width %d, skip %d, rotation %d, keep %d: width 2 "
                            "or 4, skip -1 to width - 1, rotation 1 to 8 * width - 1, keep 0 "
                            "to 1024 are supported",
                            w, skip, r, keep);
    }
    const uint8_t *d = (const uint8_t *)in.buf;
    if (skip < 0)
        skip = pick_skip(d, in.len, w);
    Py_ssize_t len = in.len, s0 = skip < len ? skip : len;
    Py_ssize_t n = (len - s0) / w, tail = len - s0 - n * w;
    Py_ssize_t bound = 5 + 4 * w + len + 64; /* a coded plane is kept only if below n */
    uint8_t *planes = NULL;
    uint16_t *sym = NULL;
    uint32_t *hist3 = NULL;
    uint8_t *tmp = NULL;
    PyObject *res = NULL;
    size_t sz_planes = al64((size_t)(n * (w - 1) + 8)), sz_sym = al64((size_t)(n * 2 + 8));
    size_t sz_hist = al64(sizeof(uint32_t) * HUF_NSYM);
    void *own;
    uint8_t *block = arena_get(sz_planes + sz_sym + sz_hist + huf_tmp_size(n), &own);
    if (block != NULL) {
        planes = block;
        sym = (uint16_t *)(block + sz_planes);
        hist3 = (uint32_t *)(block + sz_planes + sz_sym);
        tmp = block + sz_planes + sz_sym + sz_hist;
    }
    res = PyBytes_FromStringAndSize(NULL, bound);
    if (block == NULL || res == NULL) {
        Py_CLEAR(res);
        if (!PyErr_Occurred())
            PyErr_NoMemory();
        goto done;
    }
    uint8_t *out = (uint8_t *)PyBytes_AS_STRING(res), *o;
    Py_ssize_t total;
    Py_BEGIN_ALLOW_THREADS
    split_sym(d + s0, n, w, r, sym, planes, hist3);
    int mask = 0, K = 0;
    Py_ssize_t stored[4];
    o = out + 5 + 4 * w;
    memcpy(o, d, (size_t)s0);
    o += s0;
    /* plane w - 1 (the byte below the exponent; K > 0: its low 8 - K bits) is counted
     * once, if a sample says it may pay, and costed for each K */
    uint8_t *top = planes + (w - 2) * n;
    uint32_t hb[256];
    int count_top = (tries >> (w - 1) & 1) && n > 0 && plane_worth(top, n, keep, hb);
    /* plane 0: the K whose coded plane 0 plus plane w - 1 is smallest */
    uint8_t lens[HUF_NSYM], lens2[256];
    uint32_t hk[HUF_NSYM], hk2[256];
    if ((tries & 1) && n > 0) {
        /* estimated by order-0 entropy (a table of ~2 bits a symbol), and K = 0 also
         * as raw: one Huffman code is built, for the K chosen */
        double best_est = -1;
        huf_item nz[HUF_NSYM]; /* the symbols counted, in order: each K folds runs of them */
        int nnz = 0;
        for (int c = 0; c < HUF_NSYM; c++)
            if (hist3[c]) {
                nz[nnz].count = hist3[c];
                nz[nnz++].sym = (uint32_t)c;
            }
        for (int k = HUF_KMAX; k >= 0; k--) {
            int g = HUF_KMAX - k;
            double sum = 0;
            int distinct = 0;
            for (int i = 0; i < nnz;) {
                uint32_t f = nz[i].sym >> g, c = 0;
                for (; i < nnz && nz[i].sym >> g == f; i++)
                    c += nz[i].count;
                sum += c <= SAMPLE_MAX ? clogc[c] : c * log2((double)c);
                distinct++;
            }
            double est = ((double)n * log2((double)n) - sum) / 8 + distinct / 4.0 + 32;
            if (k == 0 && est * 1024 >= (double)keep * n)
                est = (double)n;
            est += (double)narrow_cost(hb, count_top, k, n, keep, lens, hk);
            if (best_est < 0 || est <= best_est) {
                best_est = est;
                K = k;
            }
        }
        int nsyms = 256 << K, sh = HUF_KMAX - K;
        fold_hist(hist3, HUF_NSYM, hk, nsyms);
        int distinct = huf_lengths(hk, lens, nsyms);
        if (K && distinct > 1 &&
            huf_size(hk, lens, nsyms, n) + narrow_cost(hb, count_top, K, n, keep, lens2, hk2) >
                2 * n) { /* the estimate was wrong: back to K = 0, never above raw */
            K = 0;
            nsyms = 256;
            sh = HUF_KMAX;
            fold_hist(hist3, HUF_NSYM, hk, nsyms);
            distinct = huf_lengths(hk, lens, nsyms);
        }
        if (distinct == 1) {
            o[0] = 0;
            store16le(o + 1, (uint16_t)(sym[0] >> sh));
            stored[0] = 3;
            mask |= 1;
        } else if (K > 0 || huf_size(hk, lens, nsyms, n) * 1024 < (Py_ssize_t)keep * n) {
            stored[0] = huf_encode(sym, 1, sh, n, lens, nsyms, o, tmp);
            mask |= 1;
        } else {
            for (Py_ssize_t j = 0; j < n; j++)
                o[j] = (uint8_t)(sym[j] >> HUF_KMAX);
            stored[0] = n;
        }
    } else {
        for (Py_ssize_t j = 0; j < n; j++)
            o[j] = (uint8_t)(sym[j] >> HUF_KMAX);
        stored[0] = n;
    }
    o += stored[0];
    for (int i = 1; i < w - 1; i++) {
        const uint8_t *plane = planes + (i - 1) * n;
        uint32_t hist[256];
        if ((tries >> i & 1) && n > 0 && plane_worth(plane, n, keep, hist)) {
            int distinct = huf_lengths(hist, lens, 256);
            if (distinct == 1) {
                o[0] = 0;
                store16le(o + 1, plane[0]);
                stored[i] = 3;
                mask |= 1 << i;
                o += 3;
                continue;
            }
            if (huf_size(hist, lens, 256, n) * 1024 < (Py_ssize_t)keep * n) {
                stored[i] = huf_encode(plane, 0, 0, n, lens, 256, o, tmp);
                mask |= 1 << i;
                o += stored[i];
                continue;
            }
        }
        memcpy(o, plane, (size_t)n);
        stored[i] = n;
        o += n;
    }
    { /* plane w - 1: coded, or raw (K > 0: packed) */
        int nsyms = 256 >> K;
        Py_ssize_t raw = K ? (n * (8 - K) + 7) / 8 : n;
        Py_ssize_t size = narrow_cost(hb, count_top, K, n, keep, lens, hk);
        if (size < raw) {
            if (K) /* the coder reads bytes: keep the low 8 - K bits (pack_narrow masks) */
                for (Py_ssize_t j = 0; j < n; j++)
                    top[j] &= (uint8_t)(nsyms - 1);
            int distinct = huf_lengths(hk, lens, nsyms);
            if (distinct == 1) {
                o[0] = 0;
                store16le(o + 1, top[0]);
                stored[w - 1] = 3;
            } else {
                stored[w - 1] = huf_encode(top, 0, 0, n, lens, nsyms, o, tmp);
            }
            mask |= 1 << (w - 1);
        } else if (K) {
            stored[w - 1] = pack_narrow(top, n, K, o);
        } else {
            memcpy(o, top, (size_t)n);
            stored[w - 1] = n;
        }
        o += stored[w - 1];
    }
    memcpy(o, d + s0 + n * w, (size_t)tail);
    o += tail;
    out[0] = (uint8_t)w;
    out[1] = (uint8_t)s0;
    out[2] = (uint8_t)(mask | HUF_FLAG | HUF_V2);
    out[3] = (uint8_t)r;
    out[4] = (uint8_t)K;
    for (int i = 0; i < w; i++)
        store32(out + 5 + 4 * i, (uint32_t)stored[i]);
    total = o - out;
    Py_END_ALLOW_THREADS
    if (_PyBytes_Resize(&res, total) < 0)
        res = NULL;
done:
    arena_done(own);
    PyBuffer_Release(&in);
    return res;
}

/* --- decoding ---------------------------------------------------------------------- */

typedef struct {
    uint64_t buf;
    int nb;
    const uint8_t *p, *end;
} bitr;

/* Decode ``cnt`` symbols of one stream with the table (mask tm; entries symbol | length
 * << 12) into ``out`` (bytes, or u16 if wide), bounds checked; returns 0, or -1 if the
 * stream ends early or has bytes or nonzero bits over. */
static int
huf_stream_tail(bitr *b, const uint16_t *tab, uint32_t tm, void *out, int wide, Py_ssize_t cnt)
{
    for (Py_ssize_t i = 0; i < cnt; i++) {
        if (b->nb < HUF_MAX) {
            b->buf &= b->nb ? (~0ull >> (64 - b->nb)) : 0;
            while (b->nb <= 56 && b->p < b->end) {
                b->buf |= (uint64_t)*b->p++ << b->nb;
                b->nb += 8;
            }
        }
        uint16_t e = tab[b->buf & tm];
        int l = e >> 12;
        if (l > b->nb)
            return -1; /* the code runs past the stream's end */
        if (wide)
            ((uint16_t *)out)[i] = (uint16_t)(e & 0xFFF);
        else
            ((uint8_t *)out)[i] = (uint8_t)e;
        b->buf >>= l;
        b->nb -= l;
    }
    if (b->p != b->end || b->nb >= 8 || (b->buf & ((1ull << b->nb) - 1)))
        return -1;
    return 0;
}

/* One lookup: up to two symbols from the bits at the bottom of x. Byte symbols: entry
 * s1 | s2 << 8 | bits << 16 | count << 24; symbols of up to 10 bits (written as u16):
 * s1 | bits << 10 | s2 << 16 | count << 30, stored whole, so each u16 has the entry's
 * other bits above its symbol (bits 10-15): join_sym shifts them out of the element,
 * and nothing else reads the symbols (no mask: hdecode 0.93-0.97x the time). */
#define GET2(x, pos, d)                                                                    \
    do {                                                                                   \
        uint32_t e_ = tab2[(x) & tm], l_ = (e_ >> 16) & 255;                              \
        store16le((d), (uint16_t)e_);                                                      \
        (d) += e_ >> 24;                                                                   \
        (x) >>= l_;                                                                        \
        (pos) += l_;                                                                       \
    } while (0)
#define GET2W(x, pos, d)                                                                   \
    do {                                                                                   \
        uint32_t e_ = tab2[(x) & tm], l_ = (e_ >> 10) & 15;                               \
        store32le((uint8_t *)(d), e_);                                                     \
        (d) += e_ >> 30;                                                                   \
        (x) >>= l_;                                                                        \
        (pos) += l_;                                                                       \
    } while (0)
#define LOOKUPS4(G, pos, d)                                                                \
    do {                                                                                   \
        uint64_t x_ = load64(base + ((pos) >> 3)) >> ((pos) & 7); /* >= 57 bits */         \
        G(x_, pos, d);                                                                     \
        G(x_, pos, d);                                                                     \
        G(x_, pos, d);                                                                     \
        G(x_, pos, d);                                                                     \
    } while (0)

/* The bulk of four streams at once, two symbols a lookup where they fit: while each has
 * 8 bytes to load at its bit position and room for 8 more symbols (4 lookups of at most
 * 12 bits from the 57 a load gives). Each stream's state is just its bit position (from
 * ``base``) and its output pointer. Leaves the rest to huf_stream_tail. */
#define FAST4_LOOP(T, G)                                                                   \
    do {                                                                                   \
        uint64_t pa = pos[0], pb = pos[1], pc = pos[2], pd = pos[3];                       \
        T *da = (T *)dst[0], *db = (T *)dst[1], *dc = (T *)dst[2], *dd = (T *)dst[3];      \
        T *ea = (T *)dend[0], *eb = (T *)dend[1], *ec = (T *)dend[2], *ed = (T *)dend[3];  \
        while ((pa >> 3) + 8 <= end[0] && (pb >> 3) + 8 <= end[1] &&                       \
               (pc >> 3) + 8 <= end[2] && (pd >> 3) + 8 <= end[3] && da + 8 <= ea &&       \
               db + 8 <= eb && dc + 8 <= ec && dd + 8 <= ed) {                             \
            LOOKUPS4(G, pa, da);                                                           \
            LOOKUPS4(G, pb, db);                                                           \
            LOOKUPS4(G, pc, dc);                                                           \
            LOOKUPS4(G, pd, dd);                                                           \
        }                                                                                  \
        pos[0] = pa;                                                                       \
        pos[1] = pb;                                                                       \
        pos[2] = pc;                                                                       \
        pos[3] = pd;                                                                       \
        dst[0] = da;                                                                       \
        dst[1] = db;                                                                       \
        dst[2] = dc;                                                                       \
        dst[3] = dd;                                                                       \
    } while (0)

static ALWAYS_INLINE void
huf_fast4_body(const uint8_t *base, uint64_t *pos, const uint64_t *end, void **dst,
               void *const *dend, const uint32_t *tab2, int wide, uint32_t tm)
{
    if (wide)
        FAST4_LOOP(uint16_t, GET2W);
    else
        FAST4_LOOP(uint8_t, GET2);
}

#define FAST4_ARGS                                                                         \
    const uint8_t *base, uint64_t *pos, const uint64_t *end, void **dst, void *const *dend, \
        const uint32_t *tab2, int wide, uint32_t tm

static void
huf_fast4_plain(FAST4_ARGS)
{
    huf_fast4_body(base, pos, end, dst, dend, tab2, wide, tm);
}

#ifdef BMI2_DISPATCH
__attribute__((target("bmi2"))) static void
huf_fast4_bmi2(FAST4_ARGS)
{
    huf_fast4_body(base, pos, end, dst, dend, tab2, wide, tm);
}
#endif

static void
huf_fast4(FAST4_ARGS)
{
#ifdef BMI2_DISPATCH
    if (use_bmi2) {
        huf_fast4_bmi2(base, pos, end, dst, dend, tab2, wide, tm);
        return;
    }
#endif
    huf_fast4_plain(base, pos, end, dst, dend, tab2, wide, tm);
}

typedef struct {
    uint16_t *tab;  /* 1 << HUF_MAX entries */
    uint32_t *tab2; /* 1 << HUF_MAX entries */
} huf_tables;

/* Decode one Huffman plane of n symbols (sub-format ``v``: 1 or 2; ``symbits``: 8, or
 * 8 + K for plane 0 of sub-format 2, written as u16) from src[0 .. len) into out; NULL
 * or an error text. */
static const char *
huf_decode(const uint8_t *src, Py_ssize_t len, Py_ssize_t n, int v, int symbits, void *out,
           huf_tables *tb)
{
    const int wide = symbits > 8, nsyms = 1 << symbits;
    if (len < 1)
        return "a Huffman plane is empty";
    int t = src[0];
    if (t == 0) {
        if (len != (v == 1 ? 2 : 3))
            return "a constant plane is not 2 bytes (3 in sub-format 2)";
        int s = v == 1 ? src[1] : load16le(src + 1);
        if (s >= nsyms)
            return "a constant plane's symbol is out of range";
        if (wide)
            for (Py_ssize_t j = 0; j < n; j++)
                ((uint16_t *)out)[j] = (uint16_t)s;
        else
            memset(out, s, (size_t)n);
        return NULL;
    }
    int hl = v == 1 ? 3 : 5;
    if (t > HUF_MAX || len < hl)
        return "a Huffman plane's header is invalid";
    int first = v == 1 ? src[1] : load16le(src + 1), last = v == 1 ? src[2] : load16le(src + 3);
    if (first > last || last >= nsyms)
        return "a Huffman plane's symbol range is empty or out of range";
    uint8_t lens[HUF_NSYM];
    memset(lens, 0, sizeof lens);
    uint32_t kraft = 0;
    int longest = 0;
    Py_ssize_t at;
    if (v == 1) {
        at = 3 + (last - first + 2) / 2;
        if (len < at)
            return "a Huffman plane's header is truncated";
        for (int s = first; s <= last; s++)
            lens[s] = (src[3 + (s - first) / 2] >> (4 * ((s - first) & 1))) & 15;
        if ((last - first) % 2 == 0 && (src[at - 1] >> 4))
            return "a Huffman plane's padding nibble is not zero";
    } else {
        Py_ssize_t k = 0, limit = 8 * (len - hl); /* bits there are */
        int prev = t;
#define GETB(x, n)                                                                         \
    do {                                                                                   \
        if (k + (n) > limit)                                                               \
            return "a Huffman plane's header is truncated";                                \
        (x) = 0;                                                                           \
        for (int i_ = 0; i_ < (n); i_++, k++)                                              \
            (x) |= ((src[hl + (k >> 3)] >> (k & 7)) & 1) << i_;                            \
    } while (0)
        for (int s = first; s <= last;) {
            int x;
            GETB(x, 1);
            if (!x) {
                lens[s++] = (uint8_t)prev;
                continue;
            }
            GETB(x, 1);
            if (!x) {
                GETB(x, 1);
                prev += x ? 1 : -1;
                if (prev < 1 || prev > HUF_MAX)
                    return "a Huffman plane's code length is out of range";
                lens[s++] = (uint8_t)prev;
                continue;
            }
            GETB(x, 1);
            if (!x) {
                s++; /* absent */
                continue;
            }
            GETB(x, 4);
            if (x == 0) {
                int z;
                GETB(z, 4);
                if (s + z + 2 > last + 1)
                    return "a Huffman plane's run of absent symbols passes its last symbol";
                s += z + 2;
            } else if (x > HUF_MAX) {
                return "a Huffman plane's code length is out of range";
            } else {
                lens[s++] = (uint8_t)x;
                prev = x;
            }
        }
#undef GETB
        if ((k & 7) && (src[hl + (k >> 3)] >> (k & 7)))
            return "a Huffman plane's padding bits are not zero";
        k = (k + 7) & ~(Py_ssize_t)7;
        at = hl + k / 8;
    }
    int lf = huf_lenfield(n);
    if (len < at + lf * (HUF_STREAMS - 1))
        return "a Huffman plane's header is truncated";
    for (int s = first; s <= last; s++) {
        int l = lens[s];
        if (l > t)
            return "a Huffman code is longer than the plane's longest";
        if (l) {
            kraft += 1u << (t - l);
            if (l > longest)
                longest = l;
        }
    }
    if (kraft != (1u << t) || longest != t)
        return "a Huffman plane's code lengths are not a complete code";
    uint32_t codes[HUF_NSYM];
    huf_codes(lens, codes, nsyms);
    uint32_t tm = (1u << t) - 1;
    uint16_t *tab = tb->tab;
    for (int s = first; s <= last; s++) {
        int l = lens[s];
        if (!l)
            continue;
        uint16_t e = (uint16_t)(s | (l << 12));
        for (uint32_t x = codes[s] & 0xFFFF; x <= tm; x += 1u << l)
            tab[x] = e;
    }
    Py_ssize_t bl[HUF_STREAMS], sum = 0;
    for (int k = 0; k < HUF_STREAMS - 1; k++) {
        bl[k] = lf == 2 ? (Py_ssize_t)load16le(src + at + 2 * k)
                        : (Py_ssize_t)load32(src + at + 4 * k);
        sum += bl[k];
    }
    at += lf * (HUF_STREAMS - 1);
    if (sum > len - at)
        return "a Huffman plane's stream lengths exceed the plane";
    bl[HUF_STREAMS - 1] = len - at - sum;
    Py_ssize_t m = (n + HUF_STREAMS - 1) / HUF_STREAMS, cnt[HUF_STREAMS];
    bitr b[HUF_STREAMS];
    void *dst[HUF_STREAMS], *dend[HUF_STREAMS];
    const int ow = wide ? 2 : 1;
    for (int k = 0; k < HUF_STREAMS; k++) {
        Py_ssize_t c = n - k * m;
        cnt[k] = c < 0 ? 0 : (c > m ? m : c);
        dst[k] = (uint8_t *)out + (cnt[k] ? k * m : 0) * ow;
        dend[k] = (uint8_t *)dst[k] + cnt[k] * ow;
        b[k].buf = 0;
        b[k].nb = 0;
        b[k].p = src + at;
        b[k].end = src + at + bl[k];
        at += bl[k];
    }
    /* pairs: decodes the code at the bottom of x and, if the next code fits in the rest
     * of the t bits, that one too. Built symbol by symbol: the x whose code is symbol s
     * (length l1, code c1) are c1 | y << l1 for every y below 2^(t - l1), and the next
     * code is then the one at the bottom of y, tab[y], whole if its length is at most
     * t - l1: a sequential read of tab rather than a lookup that waits on the first. */
    uint32_t *tab2 = tb->tab2;
    for (int s = first; s <= last; s++) {
        const uint32_t l1 = lens[s];
        if (!l1)
            continue;
        const uint32_t c1 = codes[s] & 0xFFFF, rest = (uint32_t)t - l1, ny = 1u << rest;
        if (wide) {
            const uint32_t one = (uint32_t)s | l1 << 10 | 1u << 30, two = (uint32_t)s | 2u << 30;
            for (uint32_t y = 0; y < ny; y++) {
                const uint16_t e2 = tab[y];
                const uint32_t l2 = (uint32_t)e2 >> 12;
                tab2[c1 | y << l1] =
                    l2 <= rest ? two | (l1 + l2) << 10 | (uint32_t)(e2 & 0x3FF) << 16 : one;
            }
        } else {
            const uint32_t one = (uint32_t)s | l1 << 16 | 1u << 24, two = (uint32_t)s | 2u << 24;
            for (uint32_t y = 0; y < ny; y++) {
                const uint16_t e2 = tab[y];
                const uint32_t l2 = (uint32_t)e2 >> 12;
                tab2[c1 | y << l1] =
                    l2 <= rest ? two | (uint32_t)(e2 & 255) << 8 | (l1 + l2) << 16 : one;
            }
        }
    }
    const uint8_t *base = b[0].p;
    uint64_t pos[HUF_STREAMS], end[HUF_STREAMS];
    for (int k = 0; k < HUF_STREAMS; k++) {
        pos[k] = (uint64_t)(b[k].p - base) * 8;
        end[k] = (uint64_t)(b[k].end - base);
    }
    for (int g = 0; g < HUF_STREAMS; g += 4)
        huf_fast4(base, pos + g, end + g, dst + g, dend + g, tab2, wide, tm);
    for (int k = 0; k < HUF_STREAMS; k++) { /* back to a byte pointer and buffered bits */
        b[k].p = base + (pos[k] >> 3);
        if (pos[k] & 7) {
            b[k].buf = *b[k].p++ >> (pos[k] & 7);
            b[k].nb = 8 - (int)(pos[k] & 7);
        }
    }
    for (int k = 0; k < HUF_STREAMS; k++)
        if (huf_stream_tail(&b[k], tab, tm, dst[k], wide,
                            ((uint8_t *)dend[k] - (uint8_t *)dst[k]) / ow) < 0)
            return "a Huffman stream does not hold its symbols exactly";
    return NULL;
}

/* A Huffman-planes payload's header, checked against the payload's length and raw_len. */
typedef struct {
    int w, skip, mask, r, v, hl, K;
    Py_ssize_t n, tail, narrow, stored[4];
} fhead;

/* Check the header of the payload d[0:len] of an object of raw_len bytes into *h; NULL,
 * or what is wrong with it. Reads only the payload: runs with or without the GIL. */
static const char *
fhead_check(const uint8_t *d, Py_ssize_t len, Py_ssize_t raw_len, fhead *h)
{
    if (len < 4)
        return "float payload has no header";
    int w = d[0], skip = d[1], mask = d[2], r = d[3];
    int v = (mask & HUF_V2) ? 2 : 1, hl = v == 1 ? 4 : 5;
    if ((w != 2 && w != 4) || skip >= w || !(mask & HUF_FLAG) || ((mask & 0x3F) >> w) ||
        r < 1 || r >= 8 * w)
        return "float planes header is invalid";
    if (len < hl + 4 * w)
        return "float planes header is truncated";
    int K = v == 2 ? d[4] : 0;
    if (K > HUF_KMAX || (K && !(mask & 1)))
        return "float planes header is invalid (K above 3, or K > 0 with plane 0 raw)";
    if (raw_len < skip)
        return "float planes skip more bytes than the object holds";
    Py_ssize_t n = (raw_len - skip) / w, tail = raw_len - skip - n * w;
    Py_ssize_t narrow = K ? (n * (8 - K) + 7) / 8 : n;
    Py_ssize_t sum = 0;
    for (int i = 0; i < w; i++) {
        h->stored[i] = (Py_ssize_t)load32(d + hl + 4 * i);
        sum += h->stored[i];
        if (!(mask >> i & 1) && h->stored[i] != (i == w - 1 ? narrow : n))
            return "a raw float plane has the wrong length";
    }
    if (len != hl + 4 * w + skip + sum + tail)
        return "float payload length does not match its header and raw length";
    if (K && narrow && !(mask >> (w - 1) & 1) &&
        !narrow_pads_clean(d + len - tail - h->stored[w - 1], h->stored[w - 1], n, K))
        return "a narrow float plane's padding bits are not zero";
    h->w = w;
    h->skip = skip;
    h->mask = mask;
    h->r = r;
    h->v = v;
    h->hl = hl;
    h->K = K;
    h->n = n;
    h->tail = tail;
    h->narrow = narrow;
    return NULL;
}

static const char OUT_OF_MEMORY[] = "out of memory";

/* Decode the payload d (its header checked into *h) into out (its raw_len bytes); NULL,
 * OUT_OF_MEMORY, or what is wrong with the payload. Runs without the GIL. */
static const char *
fdecode(const uint8_t *d, const fhead *h, uint8_t *out)
{
    const int w = h->w, skip = h->skip, mask = h->mask, r = h->r, v = h->v, K = h->K;
    const Py_ssize_t n = h->n;
    const Py_ssize_t *stored = h->stored;
    size_t sz_planes = al64((size_t)(n * w + 8)), sz_sym = K ? al64((size_t)(n * 2 + 8)) : 0,
           sz_tab = al64(sizeof(uint16_t) << HUF_MAX);
    void *own = NULL;
    uint8_t *block = arena_get(sz_planes + sz_sym + sz_tab + (sizeof(uint32_t) << HUF_MAX), &own);
    if (block == NULL)
        return OUT_OF_MEMORY;
    uint8_t *planes = block;
    uint16_t *sym = K ? (uint16_t *)(block + sz_planes) : NULL;
    huf_tables tb = {(uint16_t *)(block + sz_planes + sz_sym),
                     (uint32_t *)(block + sz_planes + sz_sym + sz_tab)};
    const char *err = NULL;
    const uint8_t *p = d + h->hl + 4 * w;
    const uint8_t *pl[4], *narrow_at = NULL;
    memcpy(out, p, (size_t)skip);
    p += skip;
    for (int i = 0; i < w && !err; i++) {
        pl[i] = planes + i * n;
        if (i == 0 && K) {
            err = huf_decode(p, stored[0], n, 2, 8 + K, sym, &tb);
        } else if (mask >> i & 1) {
            err = huf_decode(p, stored[i], n, v, i == w - 1 ? 8 - K : 8, planes + i * n, &tb);
        } else if (i == w - 1 && K) {
            narrow_at = p; /* unpacked block by block while joining, below */
        } else {
            pl[i] = p;
        }
        p += stored[i];
    }
    if (!err) {
        if (K && narrow_at) {
            unpack_narrow(narrow_at, stored[w - 1], n, K, planes + (w - 1) * n);
            pl[w - 1] = planes + (w - 1) * n;
            join_sym(sym, pl, n, w, r, K, out + skip);
        } else if (K)
            join_sym(sym, pl, n, w, r, K, out + skip);
        else
            join_planes(pl, n, w, r, out + skip);
        memcpy(out + skip + n * w, p, (size_t)h->tail);
    }
    arena_done(own);
    return err;
}

/* hdecode(payload, raw_len, out=None) -> the raw bytes of a Huffman-planes codec-3 payload;
 * with ``out``, they are written there (a reader's reused buffer: no fresh pages). */
static PyObject *
hdecode(PyObject *self, PyObject *args)
{
    Py_buffer in, dest = {0};
    Py_ssize_t raw_len;
    PyObject *dest_obj = Py_None;
    if (!PyArg_ParseTuple(args, "y*n|O:hdecode", &in, &raw_len, &dest_obj))
        return NULL;
    if (dest_obj != Py_None &&
        PyObject_GetBuffer(dest_obj, &dest, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0) {
        PyBuffer_Release(&in);
        return NULL;
    }
    fhead h;
    PyObject *res = NULL;
    const char *err = fhead_check((const uint8_t *)in.buf, in.len, raw_len, &h);
    if (err)
        goto done;
    if (dest.obj == NULL)
        res = PyBytes_FromStringAndSize(NULL, raw_len);
    else if (dest.len < raw_len) {
        PyErr_Format(PyExc_ValueError, "out holds %zd bytes, fewer than raw_len %zd", dest.len,
                     raw_len);
        goto done;
    } else {
        res = Py_None;
        Py_INCREF(res);
    }
    if (res == NULL)
        goto done;
    uint8_t *out = dest.obj != NULL ? (uint8_t *)dest.buf : (uint8_t *)PyBytes_AS_STRING(res);
    Py_BEGIN_ALLOW_THREADS
    err = fdecode((const uint8_t *)in.buf, &h, out);
    Py_END_ALLOW_THREADS
done:
    if (err) {
        Py_CLEAR(res);
        if (err == OUT_OF_MEMORY)
            PyErr_NoMemory();
        else
            PyErr_SetString(PyExc_ValueError, err);
    }
    PyBuffer_Release(&in);
    if (dest.obj != NULL)
        PyBuffer_Release(&dest);
    return res;
}

/* hdecode_many(payloads, raw_lens, out): each payload decoded into out end to end, all in
 * one call without the GIL. None, or (i, what is wrong) for the first payload i that does
 * not follow the format (those before it are decoded). ValueError if out is too small or
 * overlaps a payload. */
static PyObject *
hdecode_many(PyObject *self, PyObject *args)
{
    PyObject *pay_obj, *len_obj, *dest_obj;
    if (!PyArg_ParseTuple(args, "OOO:hdecode_many", &pay_obj, &len_obj, &dest_obj))
        return NULL;
    /* tuples: nothing run while taking the buffers can change their length */
    PyObject *pays = PySequence_Tuple(pay_obj);
    if (pays == NULL)
        return NULL;
    PyObject *lens = PySequence_Tuple(len_obj);
    if (lens == NULL) {
        Py_DECREF(pays);
        return NULL;
    }
    Py_ssize_t count = PyTuple_GET_SIZE(pays), got = 0;
    Py_buffer dest = {0};
    Py_buffer *in = NULL;
    fhead *heads = NULL;
    Py_ssize_t *at = NULL;
    PyObject *res = NULL;
    if (PyTuple_GET_SIZE(lens) != count) {
        PyErr_SetString(PyExc_ValueError, "payloads and raw_lens differ in length");
        goto done;
    }
    if (PyObject_GetBuffer(dest_obj, &dest, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0)
        goto done;
    in = PyMem_Calloc((size_t)count + 1, sizeof(Py_buffer));
    heads = PyMem_Calloc((size_t)count + 1, sizeof(fhead));
    at = PyMem_Calloc((size_t)count + 1, sizeof(Py_ssize_t));
    if (in == NULL || heads == NULL || at == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    Py_ssize_t bad = count, total = 0;
    const char *err = NULL;
    const uint8_t *out_lo = (const uint8_t *)dest.buf, *out_hi = out_lo + dest.len;
    for (; got < count; got++) { /* the buffers and headers, with the GIL */
        Py_ssize_t raw_len = PyLong_AsSsize_t(PyTuple_GET_ITEM(lens, got));
        if (raw_len == -1 && PyErr_Occurred())
            goto done;
        if (PyObject_GetBuffer(PyTuple_GET_ITEM(pays, got), &in[got], PyBUF_SIMPLE) < 0)
            goto done;
        const uint8_t *p = (const uint8_t *)in[got].buf;
        if (p < out_hi && out_lo < p + in[got].len) {
            got++;
            PyErr_SetString(PyExc_ValueError, "out overlaps a payload");
            goto done;
        }
        err = fhead_check(p, in[got].len, raw_len, &heads[got]);
        if (err) {
            bad = got++;
            break;
        }
        if (raw_len > dest.len - total) { /* (raw_len >= 0 here: fhead_check) */
            got++;
            PyErr_Format(PyExc_ValueError, "out holds %zd bytes, fewer than the raw_lens' sum",
                         dest.len);
            goto done;
        }
        at[got] = total;
        total += raw_len;
    }
    const char *derr = NULL;
    Py_ssize_t dbad = bad;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < bad && !derr; i++) {
        derr = fdecode((const uint8_t *)in[i].buf, &heads[i], (uint8_t *)dest.buf + at[i]);
        if (derr)
            dbad = i;
    }
    Py_END_ALLOW_THREADS
    if (derr == OUT_OF_MEMORY) {
        PyErr_NoMemory();
        goto done;
    }
    if (derr) {
        bad = dbad;
        err = derr;
    }
    res = err ? Py_BuildValue("(ns)", bad, err) : Py_NewRef(Py_None);
done:
    for (Py_ssize_t i = 0; i < got; i++)
        if (in[i].obj != NULL)
            PyBuffer_Release(&in[i]);
    PyMem_Free(in);
    PyMem_Free(heads);
    PyMem_Free(at);
    if (dest.obj != NULL)
        PyBuffer_Release(&dest);
    Py_DECREF(pays);
    Py_DECREF(lens);
    return res;
}

static PyMethodDef methods[] = {
    {"split", split, METH_VARARGS,
     "split(data, width, rot) -> the planes of len(data) // width elements, back to back."},
    {"join", join, METH_VARARGS,
     "join(width, rot, head, planes, tail) -> head + the elements of the planes + tail."},
    {"probe", probe, METH_VARARGS,
     "probe(data, width=0) -> (byte bits, [(width, skip, bits at rot 1, at rot 3), ...])."},
    {"hencode", hencode, METH_VARARGS,
     "hencode(data, width, skip, rot, tries, keep) -> a codec-3 payload of Huffman planes."},
    {"hdecode", hdecode, METH_VARARGS,
     "hdecode(payload, raw_len, out=None) -> the raw bytes of a codec-3 payload of Huffman "
     "planes; with out (a writable buffer of raw_len bytes or more), written into out[:raw_len] "
     "instead, and None returned."},
    {"hdecode_many", hdecode_many, METH_VARARGS,
     "hdecode_many(payloads, raw_lens, out) -> None, or (i, what is wrong) for the first "
     "payload that is not valid: each payload decoded into out end to end, in one call."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "modelvault._floatcodec",
    "The float codec's plane split and join, compiled.", -1, methods,
};

PyMODINIT_FUNC
PyInit__floatcodec(void)
{
#ifdef BMI2_DISPATCH
    __builtin_cpu_init();
    use_bmi2 = __builtin_cpu_supports("bmi2");
    use_avx2 = __builtin_cpu_supports("avx2");
#endif
#if ARENA_TLS
    arena_ok = pthread_key_create(&arena_key, arena_release) == 0;
#endif
    for (int x = 0; x < (1 << HUF_MAX); x++) {
        int r = 0;
        for (int b = 0; b < HUF_MAX; b++)
            r |= ((x >> b) & 1) << (HUF_MAX - 1 - b);
        rev12[x] = (uint16_t)r;
    }
    clogc[0] = 0.0f;
    for (int c = 1; c <= SAMPLE_MAX; c++)
        clogc[c] = (float)(c * log2((double)c));
    return PyModule_Create(&module);
}
