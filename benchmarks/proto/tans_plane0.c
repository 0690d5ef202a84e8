/* A prototype, not part of modelvault (issue 21): plane 0 of the float codec coded with
 * tANS instead of Huffman, to measure what it stores and how fast it decodes.
 *
 * Input: the <kind>.sym file of benchmarks/bench_codec_headroom.py --dump DIR (per
 * chunk: u32 n, then the n plane-0 bytes). Per chunk: counts normalised to 4096 (the
 * least costly unit moves), zstd's FSE spread, 8 streams of ceil(n / 8) symbols as the
 * Huffman planes cut them, each an LSB-first bit string starting with its first state
 * (12 bits), byte-aligned. Prints the bytes (streams, 19 bytes of headers a chunk, the
 * frequency table costed as bench_codec_headroom.py does) and the decoding speed, best
 * of R runs of CPU time, four streams at a time as huf_fast4 runs them; the decoding
 * tables are built before the clock starts (a real decoder builds one a plane).
 * Decoded planes are compared with the input. With -DFUSED the loop also joins each
 * symbol with a low byte (the input bytes stand in for plane 1) into rotated u16
 * elements, as hdecode's join does, and skips the comparison.
 *
 *   cc -O3 -march=native -o tans benchmarks/proto/tans_plane0.c -lm
 *   ./tans DIR/fp16.sym 9
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PB 12
#define L (1u << PB)
#define NS 8

static double
cpu(void)
{
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static int
gamma_bits(uint32_t x)
{
    int b = 0;
    while (x >> b > 1)
        b++;
    return 2 * b + 1;
}

static uint64_t
load64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

/* counts -> frequencies summing to L, each present symbol at least 1 */
static void
normalise(const uint32_t *h, uint32_t n, uint32_t *f)
{
    uint32_t sum = 0;
    for (int s = 0; s < 256; s++) {
        f[s] = h[s] ? (uint32_t)(((uint64_t)h[s] * L + n / 2) / n) : 0;
        if (h[s] && !f[s])
            f[s] = 1;
        sum += f[s];
    }
    while (sum != L) {
        int best = -1;
        double cost = 1e300;
        for (int s = 0; s < 256; s++) {
            if (!h[s] || (sum > L && f[s] <= 1))
                continue;
            double c = sum > L ? h[s] * log2((double)f[s] / (f[s] - 1))
                               : -h[s] * log2((double)(f[s] + 1) / f[s]);
            if (c < cost) {
                cost = c;
                best = s;
            }
        }
        f[best] += sum > L ? -1u : 1u;
        sum += sum > L ? -1u : 1u;
    }
}

typedef struct {
    uint32_t n;
    const uint8_t *src;
    uint8_t *buf, *out;
    uint16_t *out16;
    uint64_t start[NS];
    uint32_t dt[L]; /* symbol | bits << 8 | next state base << 16 */
} chunk;

static void
put_bits(uint8_t *buf, uint64_t *bp, uint32_t v, int nbits)
{
    uint64_t w = load64(buf + (*bp >> 3)) | (uint64_t)v << (*bp & 7);
    memcpy(buf + (*bp >> 3), &w, 8);
    *bp += (uint64_t)nbits;
}

/* encode one chunk; returns its bytes, streams and headers; *table: the table's bits */
static double
encode(chunk *c, double *table)
{
    uint32_t n = c->n, h[256] = {0}, f[256], cum[257], next[256], occ[256] = {0};
    static uint8_t spread[L];
    static uint16_t enc[L];
    for (uint32_t j = 0; j < n; j++)
        h[c->src[j]]++;
    normalise(h, n, f);
    cum[0] = 0;
    for (int s = 0; s < 256; s++)
        cum[s + 1] = cum[s] + f[s];
    int prev = -1;
    uint32_t last_f = 0;
    *table = 0;
    for (int s = 0; s < 256; s++)
        if (f[s]) {
            int d = (int)f[s] - (int)last_f;
            *table += (s - prev == 1 ? 1 : 1 + gamma_bits((uint32_t)(s - prev))) +
                      gamma_bits((uint32_t)(d > 0 ? 2 * d : 1 - 2 * d));
            prev = s;
            last_f = f[s];
        }
    uint32_t pos = 0, step = (L >> 1) + (L >> 3) + 3;
    for (int s = 0; s < 256; s++)
        for (uint32_t i = 0; i < f[s]; i++) {
            spread[pos] = (uint8_t)s;
            pos = (pos + step) & (L - 1);
        }
    memcpy(next, f, sizeof next);
    for (uint32_t u = 0; u < L; u++) {
        int s = spread[u];
        uint32_t x = next[s]++;
        int nb = PB - (31 - __builtin_clz(x));
        c->dt[u] = (uint32_t)s | (uint32_t)nb << 8 | ((x << nb) - L) << 16;
        enc[cum[s] + occ[s]++] = (uint16_t)(L + u);
    }
    uint32_t m = (n + NS - 1) / NS, *vals = malloc(4 * (m + 1));
    uint8_t *nbs = malloc(m + 1);
    c->buf = calloc(2 * (size_t)n + 64 * NS, 1);
    uint64_t bp = 0;
    for (int k = 0; k < NS; k++) {
        uint32_t lo = k * m < n ? k * m : n, hi = (k + 1) * m < n ? (k + 1) * m : n, x = L;
        int cnt = 0;
        for (uint32_t j = hi; j-- > lo;) { /* backwards; the bits are written reversed */
            uint32_t fs = f[c->src[j]];
            int kb = 0;
            while ((x >> kb) >= 2 * fs)
                kb++;
            vals[cnt] = x & ((1u << kb) - 1);
            nbs[cnt++] = (uint8_t)kb;
            x = enc[cum[c->src[j]] + (x >> kb) - fs];
        }
        c->start[k] = bp;
        put_bits(c->buf, &bp, x - L, PB);
        for (int q = cnt - 1; q >= 0; q--)
            put_bits(c->buf, &bp, vals[q], nbs[q]);
        bp = (bp + 7) & ~7ull;
    }
    free(vals);
    free(nbs);
    c->out = malloc(n + 16);
    c->out16 = malloc(2 * (size_t)n + 32);
    return (double)(bp / 8) + 5 + 2 * (NS - 1);
}

#ifdef FUSED
#define FUSED_NOTE ", joined into u16 elements"
#define EMIT(O, i, e)                                                                      \
    do {                                                                                   \
        uint16_t v_ = (uint16_t)(((e) & 255) << 8 | c->src[(O) + (i)]);                   \
        c->out16[(O) + (i)] = (uint16_t)(v_ >> 1 | v_ << 15);                              \
    } while (0)
#else
#define FUSED_NOTE ", plane 0 only"
#define EMIT(O, i, e) c->out[(O) + (i)] = (uint8_t)(e)
#endif

#define STEP4(P, S, O)                                                                     \
    do {                                                                                   \
        uint64_t x_ = load64(base + ((P) >> 3)) >> ((P) & 7);                              \
        for (int z = 0; z < 4; z++) {                                                      \
            uint32_t e = dt[S], nb = (e >> 8) & 255;                                       \
            EMIT(O, j + z, e);                                                             \
            S = (e >> 16) + (uint32_t)(x_ & ((1u << nb) - 1));                            \
            x_ >>= nb;                                                                     \
            P += nb;                                                                       \
        }                                                                                  \
    } while (0)

static void
decode(chunk *c)
{
    uint32_t n = c->n, m = (n + NS - 1) / NS, st[NS];
    const uint32_t *dt = c->dt;
    const uint8_t *base = c->buf;
    uint64_t pos[NS];
    for (int k = 0; k < NS; k++) {
        pos[k] = c->start[k];
        st[k] = (uint32_t)(load64(base + (pos[k] >> 3)) >> (pos[k] & 7)) & (L - 1);
        pos[k] += PB;
    }
    uint32_t last = n >= (NS - 1) * m ? n - (NS - 1) * m : 0;
    uint32_t common = (last < m ? last : m) & ~3u;
    for (int g = 0; g < NS; g += 4) {
        uint64_t pa = pos[g], pb = pos[g + 1], pc = pos[g + 2], pd = pos[g + 3];
        uint32_t sa = st[g], sb = st[g + 1], sc = st[g + 2], sd = st[g + 3];
        uint32_t oa = g * m, ob = (g + 1) * m, oc = (g + 2) * m, od = (g + 3) * m;
        for (uint32_t j = 0; j < common; j += 4) {
            STEP4(pa, sa, oa);
            STEP4(pb, sb, ob);
            STEP4(pc, sc, oc);
            STEP4(pd, sd, od);
        }
        pos[g] = pa, pos[g + 1] = pb, pos[g + 2] = pc, pos[g + 3] = pd;
        st[g] = sa, st[g + 1] = sb, st[g + 2] = sc, st[g + 3] = sd;
    }
    for (int k = 0; k < NS; k++) {
        uint32_t lo = k * m < n ? k * m : n, hi = (k + 1) * m < n ? (k + 1) * m : n;
        for (uint32_t j = lo + common; j < hi; j++) {
            uint32_t e = dt[st[k]], nb = (e >> 8) & 255;
            uint64_t x_ = load64(base + (pos[k] >> 3)) >> (pos[k] & 7);
            EMIT(0, j, e);
            st[k] = (e >> 16) + (uint32_t)(x_ & ((1u << nb) - 1));
            pos[k] += nb;
        }
    }
}

int
main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s KIND.sym [runs]\n", argv[0]);
        return 2;
    }
    FILE *fp = fopen(argv[1], "rb");
    if (!fp)
        return perror(argv[1]), 2;
    fseek(fp, 0, SEEK_END);
    long size = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    uint8_t *all = malloc((size_t)size);
    if (fread(all, 1, (size_t)size, fp) != (size_t)size)
        return perror(argv[1]), 2;
    fclose(fp);
    int runs = argc > 2 ? atoi(argv[2]) : 5, nc = 0;
    int count = 0;
    for (long at = 0; at + 4 <= size; count++) {
        uint32_t n;
        memcpy(&n, all + at, 4);
        at += 4 + (long)n;
    }
    chunk *cs = calloc((size_t)count, sizeof(chunk));
    if (!cs)
        return perror("calloc"), 2;
    double bytes = 0, table_bits = 0, best = 1e9;
    uint64_t symbols = 0;
    for (long at = 0; at + 4 <= size; nc++) {
        chunk *c = &cs[nc];
        memcpy(&c->n, all + at, 4);
        c->src = all + at + 4;
        at += 4 + (long)c->n;
        symbols += c->n;
        double t;
        bytes += encode(c, &t);
        table_bits += t;
    }
    for (int r = 0; r < runs; r++) {
        double t = cpu();
        for (int i = 0; i < nc; i++)
            decode(&cs[i]);
        t = cpu() - t;
        best = t < best ? t : best;
    }
#ifndef FUSED
    for (int i = 0; i < nc; i++)
        if (memcmp(cs[i].out, cs[i].src, cs[i].n)) {
            printf("chunk %d did not decode to its symbols\n", i);
            return 1;
        }
#endif
    printf("%d chunks, %lu symbols: streams and headers %.0f + tables %.0f = %.0f bytes; "
           "decoding %.1f Msym/s (%.0f MB/s of 2-byte elements)%s\n",
           nc, (unsigned long)symbols, bytes, table_bits / 8, bytes + table_bits / 8,
           symbols / best / 1e6, 2 * symbols / best / 1e6, FUSED_NOTE);
    return 0;
}
