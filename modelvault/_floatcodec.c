/* modelvault._floatcodec: the float codec's planes (docs/format.md, section 2), compiled.
 *
 * A float of width w bytes (2: bf16 / fp16, 4: fp32), read little-endian, is rotated
 * left by r bits (1 <= r < 8w). With r = 1 the sign drops to bit 0 and the 8 bits after
 * it (the exponent of bf16 and fp32; the exponent and 3 mantissa bits of fp16) fill the
 * top byte; with r = 3 the top byte holds the exponent's 5 low bits and 3 mantissa bits,
 * and the exponent's 2 high bits (nearly constant in weights) join the sign in the
 * lowest byte, which then shrinks too. Plane 0 holds the top byte of every element,
 * plane j (1 <= j < w) byte j - 1. modelvault.core.codec entropy-codes the planes that
 * pay with zstd; the others stay raw.
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
 * split and join run without the GIL, and so does probe's counting.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

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

static void
split_planes(const uint8_t *src, Py_ssize_t n, int w, int r, uint8_t *out)
{
    if (w == 4) {
        uint8_t *e = out, *a = out + n, *b = out + 2 * n, *c = out + 3 * n;
        for (Py_ssize_t j = 0; j < n; j++) {
            uint32_t v = load32(src + 4 * j);
            v = (v << r) | (v >> (32 - r));
            e[j] = (uint8_t)(v >> 24);
            a[j] = (uint8_t)v;
            b[j] = (uint8_t)(v >> 8);
            c[j] = (uint8_t)(v >> 16);
        }
    } else { /* w == 2 */
        uint8_t *e = out, *a = out + n;
        for (Py_ssize_t j = 0; j < n; j++) {
            uint16_t v = (uint16_t)(src[2 * j] | (src[2 * j + 1] << 8));
            v = (uint16_t)((v << r) | (v >> (16 - r)));
            e[j] = (uint8_t)(v >> 8);
            a[j] = (uint8_t)v;
        }
    }
}

static void
join_planes(const uint8_t *const *p, Py_ssize_t n, int w, int r, uint8_t *out)
{
    if (w == 4) {
        const uint8_t *e = p[0], *a = p[1], *b = p[2], *c = p[3];
        for (Py_ssize_t j = 0; j < n; j++) {
            uint32_t v = (uint32_t)a[j] | ((uint32_t)b[j] << 8) | ((uint32_t)c[j] << 16) |
                         ((uint32_t)e[j] << 24);
            store32(out + 4 * j, (v >> r) | (v << (32 - r)));
        }
    } else {
        const uint8_t *e = p[0], *a = p[1];
        for (Py_ssize_t j = 0; j < n; j++) {
            uint16_t v = (uint16_t)(a[j] | (e[j] << 8));
            v = (uint16_t)((v >> r) | (v << (16 - r)));
            out[2 * j] = (uint8_t)v;
            out[2 * j + 1] = (uint8_t)(v >> 8);
        }
    }
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

static PyMethodDef methods[] = {
    {"split", split, METH_VARARGS,
     "split(data, width, rot) -> the planes of len(data) // width elements, back to back."},
    {"join", join, METH_VARARGS,
     "join(width, rot, head, planes, tail) -> head + the elements of the planes + tail."},
    {"probe", probe, METH_VARARGS,
     "probe(data, width=0) -> (byte bits, [(width, skip, bits at rot 1, at rot 3), ...])."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "modelvault._floatcodec",
    "The float codec's plane split and join, compiled.", -1, methods,
};

PyMODINIT_FUNC
PyInit__floatcodec(void)
{
    clogc[0] = 0.0f;
    for (int c = 1; c <= SAMPLE_MAX; c++)
        clogc[c] = (float)(c * log2((double)c));
    return PyModule_Create(&module);
}
