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
 *
 * split, join, hencode and hdecode run without the GIL, and so does probe's counting.
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

/* --- Huffman planes (docs/format.md, section 2, "Huffman sub-format") ------------------
 *
 * A plane of n bytes is coded with a canonical Huffman code of at most HUF_MAX bits,
 * its symbols cut into 4 streams (stream k: symbols k*m .. min(n, (k+1)*m) - 1, with
 * m = ceil(n / 4)), each a bit string packed from the least significant bit of each byte,
 * each code written from its most significant bit, the last byte padded with zero bits.
 * Four independent streams let the encoder and decoder run four chains at once.
 *
 *   plane := T u8 (0: constant plane, then the symbol u8; 1..12: the longest code)
 *            first u8, last u8, (last - first + 1) code lengths of 4 bits, low nibble
 *            first (0: symbol absent), stream lengths B0..B6 (u16 while ceil(n / 8) <=
 *            43690, else u32), streams 0..7
 */

#define HUF_MAX 12
#ifndef HUF_STREAMS
#define HUF_STREAMS 8
#endif
#define HUF_SMALL_M 43690 /* ceil(43690 * 12 / 8) = 65535 */

typedef struct {
    uint32_t count;
    uint32_t sym;
} huf_item;

/* Sort by count, then symbol (shell sort: at most 256 items, no calls). */
static void
huf_sort(huf_item *a, int m)
{
    static const int gaps[] = {57, 23, 10, 4, 1};
    for (int g = 0; g < 5; g++) {
        int gap = gaps[g];
        for (int i = gap; i < m; i++) {
            huf_item x = a[i];
            uint64_t kx = (uint64_t)x.count << 8 | x.sym;
            int j = i;
            while (j >= gap && ((uint64_t)a[j - gap].count << 8 | a[j - gap].sym) > kx) {
                a[j] = a[j - gap];
                j -= gap;
            }
            a[j] = x;
        }
    }
}

/* Code lengths (at most HUF_MAX, a complete code) of the symbols counted in ``hist``,
 * into ``lens``; returns the number of distinct symbols. */
static int
huf_lengths(const uint32_t *hist, uint8_t *lens)
{
    huf_item items[256];
    uint64_t weight[512];
    int parent[512], depth[512];
    int m = 0;
    memset(lens, 0, 256);
    for (int s = 0; s < 256; s++)
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
    uint32_t num[256 + 1];
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

/* Canonical codes of ``lens`` (longest ``t``), bit-reversed for LSB-first streams:
 * codes[s] = reversed code | len << 16. */
static void
huf_codes(const uint8_t *lens, uint32_t *codes)
{
    uint32_t num[HUF_MAX + 1] = {0}, next[HUF_MAX + 2];
    for (int s = 0; s < 256; s++)
        num[lens[s]]++;
    num[0] = 0;
    uint32_t code = 0;
    for (int len = 1; len <= HUF_MAX; len++) {
        code = (code + num[len - 1]) << 1;
        next[len] = code;
    }
    for (int s = 0; s < 256; s++) {
        int len = lens[s];
        if (!len) {
            codes[s] = 0;
            continue;
        }
        uint32_t c = next[len]++, r = 0;
        for (int b = 0; b < len; b++)
            r |= ((c >> b) & 1u) << (len - 1 - b);
        codes[s] = r | ((uint32_t)len << 16);
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

#define PUT(w, e)                                                                          \
    do {                                                                                   \
        uint32_t e_ = (e);                                                                 \
        (w).buf |= (uint64_t)(e_ & 0xFFFF) << (w).nb;                                      \
        (w).nb += e_ >> 16;                                                                \
    } while (0)
#define FLUSH(w)                                                                           \
    do {                                                                                   \
        store64((w).p, (w).buf);                                                           \
        (w).p += (w).nb >> 3;                                                              \
        (w).buf >>= (w).nb & ~7u;                                                          \
        (w).nb &= 7;                                                                       \
    } while (0)

static ALWAYS_INLINE bitw
encode_stream_body(bitw x, const uint8_t *sp, Py_ssize_t c, const uint32_t *codes)
{
    Py_ssize_t j = 0;
    for (; j + 4 <= c; j += 4) { /* 4 codes of <= 12 bits: 48 + 7 bits in the buffer */
        PUT(x, codes[sp[j]]);
        PUT(x, codes[sp[j + 1]]);
        PUT(x, codes[sp[j + 2]]);
        PUT(x, codes[sp[j + 3]]);
        FLUSH(x);
    }
    for (; j < c; j++) {
        PUT(x, codes[sp[j]]);
        FLUSH(x);
    }
    FLUSH(x);
    if (x.nb) /* the last, partial byte */
        x.p += 1;
    return x;
}

static bitw
encode_stream_plain(bitw x, const uint8_t *sp, Py_ssize_t c, const uint32_t *codes)
{
    return encode_stream_body(x, sp, c, codes);
}

#ifdef BMI2_DISPATCH
__attribute__((target("bmi2"))) static bitw
encode_stream_bmi2(bitw x, const uint8_t *sp, Py_ssize_t c, const uint32_t *codes)
{
    return encode_stream_body(x, sp, c, codes);
}
#endif

static bitw
encode_stream(bitw x, const uint8_t *sp, Py_ssize_t c, const uint32_t *codes)
{
#ifdef BMI2_DISPATCH
    if (use_bmi2)
        return encode_stream_bmi2(x, sp, c, codes);
#endif
    return encode_stream_plain(x, sp, c, codes);
}

/* Bytes of each stream-length field of a plane of n symbols: 2 while a stream of
 * m = ceil(n / 8) codes of at most 12 bits surely fits in 65535 bytes, else 4. */
static inline int
huf_lenfield(Py_ssize_t n)
{
    return (n + HUF_STREAMS - 1) / HUF_STREAMS <= HUF_SMALL_M ? 2 : 4;
}

/* Huffman-code the n symbols of ``plane`` into ``out`` (room: huf_bound(n)); returns the
 * bytes written. ``hist`` holds the plane's counts, at least two symbols nonzero. */
static Py_ssize_t
huf_encode(const uint8_t *plane, Py_ssize_t n, const uint8_t *lens, uint8_t *out,
           uint8_t *scratch)
{
    uint32_t codes[256];
    int t = 0, first = 256, last = -1;
    for (int s = 0; s < 256; s++)
        if (lens[s]) {
            if (lens[s] > t)
                t = lens[s];
            if (first == 256)
                first = s;
            last = s;
        }
    huf_codes(lens, codes);
    uint8_t *o = out;
    *o++ = (uint8_t)t;
    *o++ = (uint8_t)first;
    *o++ = (uint8_t)last;
    for (int s = first; s <= last; s += 2)
        *o++ = (uint8_t)(lens[s] | (s + 1 <= last ? lens[s + 1] << 4 : 0));
    uint8_t *lenfield = o;
    int lf = huf_lenfield(n);
    o += lf * (HUF_STREAMS - 1);
    Py_ssize_t m = (n + HUF_STREAMS - 1) / HUF_STREAMS, cnt[HUF_STREAMS];
    Py_ssize_t cap = (m * HUF_MAX) / 8 + 16; /* bytes of scratch per stream */
    bitw w[HUF_STREAMS];
    const uint8_t *src[HUF_STREAMS];
    for (int k = 0; k < HUF_STREAMS; k++) {
        Py_ssize_t c = n - k * m;
        cnt[k] = c < 0 ? 0 : (c > m ? m : c);
        src[k] = plane + k * m;
        w[k].buf = 0;
        w[k].nb = 0;
        w[k].p = scratch + k * cap;
    }
    for (int k = 0; k < HUF_STREAMS; k++) /* one stream at a time, its state in registers */
        w[k] = encode_stream(w[k], src[k], cnt[k], codes);
    for (int k = 0; k < HUF_STREAMS; k++) {
        Py_ssize_t b = w[k].p - (scratch + k * cap);
        if (k < HUF_STREAMS - 1 && lf == 2)
            store16le(lenfield + 2 * k, (uint16_t)b);
        else if (k < HUF_STREAMS - 1)
            store32(lenfield + 4 * k, (uint32_t)b);
        memcpy(o, scratch + k * cap, (size_t)b);
        o += b;
    }
    return o - out;
}

/* Scratch bytes huf_encode needs for n symbols. */
static Py_ssize_t
huf_scratch(Py_ssize_t n)
{
    Py_ssize_t m = (n + HUF_STREAMS - 1) / HUF_STREAMS;
    return HUF_STREAMS * ((m * HUF_MAX) / 8 + 16);
}

/* Bits of the plane coded with ``lens`` and its header: the exact coded size. */
static Py_ssize_t
huf_size(const uint32_t *hist, const uint8_t *lens, Py_ssize_t n)
{
    uint64_t bits = 0;
    int first = 256, last = -1;
    for (int s = 0; s < 256; s++)
        if (lens[s]) {
            bits += (uint64_t)hist[s] * lens[s];
            if (first == 256)
                first = s;
            last = s;
        }
    /* streams round up to bytes: at most 4 bytes more than bits / 8 */
    return 3 + (last - first + 2) / 2 + huf_lenfield(n) * (HUF_STREAMS - 1) +
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

#define HUF_SAMPLE 1024 /* bytes of each of 4 slices of a mantissa plane's sample */
#define HUF_FLAG 0x80 /* plane mask bit 7: the planes marked are Huffman-coded, not zstd */

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

/* hencode(data, width, skip, rot, tries, keep) -> the codec-3 payload, Huffman planes:
 * plane i is Huffman-coded when bit i of ``tries`` is set and its coded size is below
 * ``keep`` / 1024 of n, else stored raw. ``skip`` -1: the encoder picks it (pick_skip). */
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
    Py_ssize_t bound = 4 + 4 * w + len + 64; /* a coded plane is kept only if below n */
    uint8_t *planes = NULL, *scratch = NULL;
    PyObject *res = NULL;
    planes = PyMem_RawMalloc((size_t)(n * w + 1));
    scratch = PyMem_RawMalloc((size_t)(huf_scratch(n) + 1));
    res = PyBytes_FromStringAndSize(NULL, bound);
    if (planes == NULL || scratch == NULL || res == NULL) {
        Py_CLEAR(res);
        if (!PyErr_Occurred())
            PyErr_NoMemory();
        goto done;
    }
    uint8_t *out = (uint8_t *)PyBytes_AS_STRING(res), *o;
    Py_ssize_t total;
    Py_BEGIN_ALLOW_THREADS
    split_planes(d + s0, n, w, r, planes);
    int mask = 0;
    Py_ssize_t stored[4];
    o = out + 4 + 4 * w;
    memcpy(o, d, (size_t)s0);
    o += s0;
    for (int i = 0; i < w; i++) {
        const uint8_t *plane = planes + i * n;
        stored[i] = n;
        if ((tries >> i & 1) && n > 0) {
            uint32_t hist[256];
            uint8_t lens[256];
            if (i > 0 && n > 4 * HUF_SAMPLE) { /* a mantissa plane: a sample first */
                Py_ssize_t step = (n - HUF_SAMPLE) / 3;
                uint32_t part[256];
                memset(hist, 0, sizeof hist);
                for (int k = 0; k < 4; k++) {
                    histogram(plane + k * step, HUF_SAMPLE, part);
                    for (int c = 0; c < 256; c++)
                        hist[c] += part[c];
                }
                /* no code beats the sample's order-0 entropy: noise is not worth
                 * counting the whole plane */
                if (entropy(hist, 4 * HUF_SAMPLE) * 1024 >= 8.0 * keep)
                    goto raw;
            }
            histogram(plane, n, hist);
            int distinct = huf_lengths(hist, lens);
            if (distinct == 1) {
                o[0] = 0;
                o[1] = plane[0];
                stored[i] = 2;
                mask |= 1 << i;
                o += 2;
                continue;
            }
            if (huf_size(hist, lens, n) * 1024 < (Py_ssize_t)keep * n) {
                stored[i] = huf_encode(plane, n, lens, o, scratch);
                mask |= 1 << i;
                o += stored[i];
                continue;
            }
        }
    raw:
        memcpy(o, plane, (size_t)n);
        o += n;
    }
    memcpy(o, d + s0 + n * w, (size_t)tail);
    o += tail;
    out[0] = (uint8_t)w;
    out[1] = (uint8_t)s0;
    out[2] = (uint8_t)(mask | HUF_FLAG);
    out[3] = (uint8_t)r;
    for (int i = 0; i < w; i++)
        store32(out + 4 + 4 * i, (uint32_t)stored[i]);
    total = o - out;
    Py_END_ALLOW_THREADS
    if (_PyBytes_Resize(&res, total) < 0)
        res = NULL;
done:
    PyMem_RawFree(planes);
    PyMem_RawFree(scratch);
    PyBuffer_Release(&in);
    return res;
}

/* --- decoding ---------------------------------------------------------------------- */

typedef struct {
    uint64_t buf;
    int nb;
    const uint8_t *p, *end;
} bitr;

/* Decode ``cnt`` symbols of one stream with the table (mask tm) into ``out``, bounds
 * checked; returns 0, or -1 if the stream ends early or has bytes or nonzero bits over. */
static int
huf_stream_tail(bitr *b, const uint16_t *tab, uint32_t tm, uint8_t *out, Py_ssize_t cnt)
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
        int l = e >> 8;
        if (l > b->nb)
            return -1; /* the code runs past the stream's end */
        out[i] = (uint8_t)e;
        b->buf >>= l;
        b->nb -= l;
    }
    if (b->p != b->end || b->nb >= 8 || (b->buf & ((1ull << b->nb) - 1)))
        return -1;
    return 0;
}

/* One lookup: up to two symbols from the bits at the bottom of x. */
#define GET2(x, pos, d)                                                                    \
    do {                                                                                   \
        uint32_t e_ = tab2[(x) & tm], l_ = (e_ >> 16) & 255;                              \
        store16le((d), (uint16_t)e_);                                                      \
        (d) += e_ >> 24;                                                                   \
        (x) >>= l_;                                                                        \
        (pos) += l_;                                                                       \
    } while (0)
#define LOOKUPS4(pos, d)                                                                   \
    do {                                                                                   \
        uint64_t x_ = load64(base + ((pos) >> 3)) >> ((pos) & 7); /* >= 57 bits */         \
        GET2(x_, pos, d);                                                                  \
        GET2(x_, pos, d);                                                                  \
        GET2(x_, pos, d);                                                                  \
        GET2(x_, pos, d);                                                                  \
    } while (0)

/* The bulk of four streams at once, two symbols a lookup where they fit: while each has
 * 8 bytes to load at its bit position and room for 8 more symbols (4 lookups of at most
 * 12 bits from the 57 a load gives). Each stream's state is just its bit position (from
 * ``base``) and its output pointer. Leaves the rest to huf_stream_tail. */
static ALWAYS_INLINE void
huf_fast4_body(const uint8_t *base, uint64_t *pos, const uint64_t *end, uint8_t **dst,
               uint8_t *const *dend, const uint32_t *tab2, uint32_t tm)
{
    uint64_t pa = pos[0], pb = pos[1], pc = pos[2], pd = pos[3];
    uint8_t *da = dst[0], *db = dst[1], *dc = dst[2], *dd = dst[3];
    while ((pa >> 3) + 8 <= end[0] && (pb >> 3) + 8 <= end[1] && (pc >> 3) + 8 <= end[2] &&
           (pd >> 3) + 8 <= end[3] && da + 8 <= dend[0] && db + 8 <= dend[1] &&
           dc + 8 <= dend[2] && dd + 8 <= dend[3]) {
        LOOKUPS4(pa, da);
        LOOKUPS4(pb, db);
        LOOKUPS4(pc, dc);
        LOOKUPS4(pd, dd);
    }
    pos[0] = pa;
    pos[1] = pb;
    pos[2] = pc;
    pos[3] = pd;
    dst[0] = da;
    dst[1] = db;
    dst[2] = dc;
    dst[3] = dd;
}

#define FAST4_ARGS                                                                         \
    const uint8_t *base, uint64_t *pos, const uint64_t *end, uint8_t **dst,                \
        uint8_t *const *dend, const uint32_t *tab2, uint32_t tm

static void
huf_fast4_plain(FAST4_ARGS)
{
    huf_fast4_body(base, pos, end, dst, dend, tab2, tm);
}

#ifdef BMI2_DISPATCH
__attribute__((target("bmi2"))) static void
huf_fast4_bmi2(FAST4_ARGS)
{
    huf_fast4_body(base, pos, end, dst, dend, tab2, tm);
}
#endif

static void
huf_fast4(FAST4_ARGS)
{
#ifdef BMI2_DISPATCH
    if (use_bmi2) {
        huf_fast4_bmi2(base, pos, end, dst, dend, tab2, tm);
        return;
    }
#endif
    huf_fast4_plain(base, pos, end, dst, dend, tab2, tm);
}

/* Decode one Huffman plane of n symbols from src[0 .. len) into out; 0 or an error text. */
static const char *
huf_decode(const uint8_t *src, Py_ssize_t len, Py_ssize_t n, uint8_t *out, uint16_t *tab,
           uint32_t *tab2)
{
    if (len < 1)
        return "a Huffman plane is empty";
    int t = src[0];
    if (t == 0) {
        if (len != 2)
            return "a constant plane is not 2 bytes";
        memset(out, src[1], (size_t)n);
        return NULL;
    }
    if (t > HUF_MAX || len < 3)
        return "a Huffman plane's header is invalid";
    int first = src[1], last = src[2];
    if (first > last)
        return "a Huffman plane's symbol range is empty";
    Py_ssize_t at = 3 + (last - first + 2) / 2;
    int lf = huf_lenfield(n);
    if (len < at + lf * (HUF_STREAMS - 1))
        return "a Huffman plane's header is truncated";
    uint8_t lens[256];
    memset(lens, 0, sizeof lens);
    uint32_t kraft = 0;
    int longest = 0;
    for (int s = first; s <= last; s++) {
        int l = (src[3 + (s - first) / 2] >> (4 * ((s - first) & 1))) & 15;
        if (l > t)
            return "a Huffman code is longer than the plane's longest";
        lens[s] = (uint8_t)l;
        if (l) {
            kraft += 1u << (t - l);
            if (l > longest)
                longest = l;
        }
    }
    if ((last - first) % 2 == 0 && (src[at - 1] >> 4))
        return "a Huffman plane's padding nibble is not zero";
    if (kraft != (1u << t) || longest != t)
        return "a Huffman plane's code lengths are not a complete code";
    uint32_t codes[256];
    huf_codes(lens, codes);
    uint32_t tm = (1u << t) - 1;
    for (int s = 0; s < 256; s++) {
        int l = lens[s];
        if (!l)
            continue;
        uint16_t e = (uint16_t)(s | (l << 8));
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
    uint8_t *dst[HUF_STREAMS];
    for (int k = 0; k < HUF_STREAMS; k++) {
        Py_ssize_t c = n - k * m;
        cnt[k] = c < 0 ? 0 : (c > m ? m : c);
        dst[k] = out + k * m;
        b[k].buf = 0;
        b[k].nb = 0;
        b[k].p = src + at;
        b[k].end = src + at + bl[k];
        at += bl[k];
    }
    /* pairs: tab2[x] decodes the code at the bottom of x and, if the next code fits in
     * the rest of the t bits, that one too: s1 | s2 << 8 | bits << 16 | count << 24 */
    for (uint32_t x = 0; x <= tm; x++) {
        uint16_t e1 = tab[x], e2 = tab[x >> (e1 >> 8)];
        uint32_t l1 = e1 >> 8, l2 = e2 >> 8;
        tab2[x] = l1 + l2 <= (uint32_t)t
                      ? (uint32_t)(e1 & 255) | (uint32_t)(e2 & 255) << 8 | (l1 + l2) << 16 | 2u << 24
                      : (uint32_t)(e1 & 255) | l1 << 16 | 1u << 24;
    }
    uint8_t *dend[HUF_STREAMS];
    for (int k = 0; k < HUF_STREAMS; k++)
        dend[k] = dst[k] + cnt[k];
    const uint8_t *base = b[0].p;
    uint64_t pos[HUF_STREAMS], end[HUF_STREAMS];
    for (int k = 0; k < HUF_STREAMS; k++) {
        pos[k] = (uint64_t)(b[k].p - base) * 8;
        end[k] = (uint64_t)(b[k].end - base);
    }
    for (int g = 0; g < HUF_STREAMS; g += 4)
        huf_fast4(base, pos + g, end + g, dst + g, dend + g, tab2, tm);
    for (int k = 0; k < HUF_STREAMS; k++) { /* back to a byte pointer and buffered bits */
        b[k].p = base + (pos[k] >> 3);
        if (pos[k] & 7) {
            b[k].buf = *b[k].p++ >> (pos[k] & 7);
            b[k].nb = 8 - (int)(pos[k] & 7);
        }
    }
    for (int k = 0; k < HUF_STREAMS; k++)
        if (huf_stream_tail(&b[k], tab, tm, dst[k], dend[k] - dst[k]) < 0)
            return "a Huffman stream does not hold its symbols exactly";
    return NULL;
}

/* hdecode(payload, raw_len) -> the raw bytes of a Huffman-planes codec-3 payload. */
static PyObject *
hdecode(PyObject *self, PyObject *args)
{
    Py_buffer in;
    Py_ssize_t raw_len;
    if (!PyArg_ParseTuple(args, "y*n:hdecode", &in, &raw_len))
        return NULL;
    const uint8_t *d = (const uint8_t *)in.buf;
    Py_ssize_t len = in.len;
    const char *err = NULL;
    PyObject *res = NULL;
    uint8_t *planes = NULL;
    uint16_t *tab = NULL;
    uint32_t *tab2 = NULL;
    if (len < 4) {
        err = "float payload has no header";
        goto done;
    }
    int w = d[0], skip = d[1], mask = d[2], r = d[3];
    if ((w != 2 && w != 4) || skip >= w || !(mask & HUF_FLAG) || ((mask & 0x7F) >> w) ||
        r < 1 || r >= 8 * w) {
        err = "float planes header is invalid";
        goto done;
    }
    if (len < 4 + 4 * w) {
        err = "float planes header is truncated";
        goto done;
    }
    if (raw_len < skip) {
        err = "float planes skip more bytes than the object holds";
        goto done;
    }
    Py_ssize_t n = (raw_len - skip) / w, tail = raw_len - skip - n * w;
    Py_ssize_t stored[4], sum = 0;
    for (int i = 0; i < w; i++) {
        stored[i] = (Py_ssize_t)load32(d + 4 + 4 * i);
        sum += stored[i];
        if (!(mask >> i & 1) && stored[i] != n) {
            err = "a raw float plane has the wrong length";
            goto done;
        }
    }
    if (len != 4 + 4 * w + skip + sum + tail) {
        err = "float payload length does not match its header and raw length";
        goto done;
    }
    res = PyBytes_FromStringAndSize(NULL, raw_len);
    planes = PyMem_RawMalloc((size_t)(n * w + 1));
    tab = PyMem_RawMalloc(sizeof(uint16_t) << HUF_MAX);
    tab2 = PyMem_RawMalloc(sizeof(uint32_t) << HUF_MAX);
    if (res == NULL || planes == NULL || tab == NULL || tab2 == NULL) {
        Py_CLEAR(res);
        if (!PyErr_Occurred())
            PyErr_NoMemory();
        goto done;
    }
    uint8_t *out = (uint8_t *)PyBytes_AS_STRING(res);
    Py_BEGIN_ALLOW_THREADS
    const uint8_t *p = d + 4 + 4 * w;
    const uint8_t *pl[4];
    memcpy(out, p, (size_t)skip);
    p += skip;
    for (int i = 0; i < w && !err; i++) {
        if (mask >> i & 1) {
            err = huf_decode(p, stored[i], n, planes + i * n, tab, tab2);
            pl[i] = planes + i * n;
        } else {
            pl[i] = p;
        }
        p += stored[i];
    }
    if (!err) {
        join_planes(pl, n, w, r, out + skip);
        memcpy(out + skip + n * w, p, (size_t)tail);
    }
    Py_END_ALLOW_THREADS
done:
    if (err) {
        Py_CLEAR(res);
        PyErr_SetString(PyExc_ValueError, err);
    }
    PyMem_RawFree(planes);
    PyMem_RawFree(tab);
    PyMem_RawFree(tab2);
    PyBuffer_Release(&in);
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
     "hdecode(payload, raw_len) -> the raw bytes of a codec-3 payload of Huffman planes."},
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
    clogc[0] = 0.0f;
    for (int c = 1; c <= SAMPLE_MAX; c++)
        clogc[c] = (float)(c * log2((double)c));
    return PyModule_Create(&module);
}
