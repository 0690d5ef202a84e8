/* The bf16 encoder's parts, timed apart (session 21 probe, not a target).
 *
 * Includes modelvault/_floatcodec.c itself, so the loops timed are the module's own
 * (split_sym_avx2, encode_pair_bmi2) beside variants of them:
 *
 *   split:  the fused split + count (split_sym_avx2) / the same built for AVX-512 /
 *           the split alone / the split, then the count alone
 *   encode: 8 Huffman streams two at a time (encode_pair_bmi2, as hencode codes plane 0)
 *           / four at a time
 *
 * over 64 KiB chunks of the first 256 MiB after the first MiB of a bf16 file (the
 * store benchmark's bf16 workload), each variant three times, alternating. Build and run
 * (Linux, x86-64 with BMI2 and AVX2; AVX-512BW for the third split variant):
 *
 *   PY=.venv/bin/python
 *   INC=$($PY -c "import sysconfig; print(sysconfig.get_paths()['include'])")
 *   LIB=$($PY -c "import sysconfig; print(sysconfig.get_config_var('LIBDIR'))")
 *   gcc -O3 -I$INC benchmarks/proto/encoder_parts.c -o /tmp/encoder_parts \
 *       -L$LIB -lpython3.11 -lm
 *   LD_LIBRARY_PATH=$LIB /tmp/encoder_parts /var/tmp/mv-bf16/workload-bf16/v0/model.safetensors
 */
#include "../../modelvault/_floatcodec.c"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double
now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

__attribute__((target("avx512bw,avx512vl,avx512f,prefer-vector-width=512"))) static void
split_sym_512(SPLIT_SYM_ARGS)
{
    split_sym_body(src, n, w, r, sym, out, hist);
}

/* split_sym_body's split for bf16 at rotation 1, without the count */
__attribute__((target("avx2"))) static void
split_only(const uint8_t *restrict src, Py_ssize_t n, uint16_t *restrict sym,
           uint8_t *restrict a)
{
    const int sh = 8 * 2 - 8 - HUF_KMAX;
    for (Py_ssize_t j = 0; j < n; j++) {
        uint16_t v = load16le(src + 2 * j);
        v = (uint16_t)((v << 1) | (v >> 15));
        sym[j] = (uint16_t)(v >> sh);
        a[j] = (uint8_t)v;
    }
}

/* split_sym_body's count, alone */
static void
count_only(const uint16_t *sym, Py_ssize_t n, uint32_t *hist)
{
    uint32_t h[4][HUF_NSYM];
    memset(h, 0, sizeof h);
    for (Py_ssize_t j = 0; j + 4 <= n; j += 4) {
        uint64_t q;
        memcpy(&q, sym + j, 8);
        h[0][q & 0xFFFF]++;
        h[1][(q >> 16) & 0xFFFF]++;
        h[2][(q >> 32) & 0xFFFF]++;
        h[3][q >> 48]++;
    }
    for (int s = 0; s < HUF_NSYM; s++)
        hist[s] = h[0][s] + h[1][s] + h[2][s] + h[3][s];
}

#define QUAD_LOOP(T)                                                                       \
    do {                                                                                   \
        const T *p0 = (const T *)s0, *p1 = (const T *)s1, *p2 = (const T *)s2,             \
                *p3 = (const T *)s3;                                                       \
        for (Py_ssize_t j = 0; j < c; j += 4) {                                            \
            for (int i = 0; i < 4; i++) {                                                  \
                PUT(a, t, p0[j + i]);                                                      \
                PUT(b, t, p1[j + i]);                                                      \
                PUT(cc, t, p2[j + i]);                                                     \
                PUT(d, t, p3[j + i]);                                                      \
            }                                                                              \
            FLUSH(a);                                                                      \
            FLUSH(b);                                                                      \
            FLUSH(cc);                                                                     \
            FLUSH(d);                                                                      \
        }                                                                                  \
    } while (0)

__attribute__((target("bmi2"))) static void
encode_quad(bitw *A, bitw *B, bitw *C, bitw *D, const void *s0, const void *s1,
            const void *s2, const void *s3, int wide, Py_ssize_t c, const huf_enc *t)
{
    bitw a = *A, b = *B, cc = *C, d = *D;
    if (wide)
        QUAD_LOOP(uint16_t);
    else
        QUAD_LOOP(uint8_t);
    *A = a, *B = b, *C = cc, *D = d;
}

int
main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s BF16_FILE\n", argv[0]);
        return 2;
    }
    FILE *f = fopen(argv[1], "rb");
    if (f == NULL) {
        perror(argv[1]);
        return 1;
    }
    size_t total = 256u << 20;
    uint8_t *buf = malloc(total);
    fseek(f, 1 << 20, SEEK_SET);
    size_t got = fread(buf, 1, total, f);
    fclose(f);
    const Py_ssize_t chunk = 64 * 1024, n = chunk / 2, m = n / HUF_STREAMS;
    uint16_t *sym = aligned_alloc(64, n * 2 + 64);
    uint8_t *planes = aligned_alloc(64, n + 64), *out = malloc(4 * n + 1024);
    uint32_t hist[HUF_NSYM];
    use_bmi2 = __builtin_cpu_supports("bmi2");
    use_avx2 = __builtin_cpu_supports("avx2");
    int has512 = __builtin_cpu_supports("avx512bw");
    const char *split_names[] = {"split+count (module)", "split+count, AVX-512 build",
                                 "split alone", "split, then count alone"};
    for (int round = 0; round < 3; round++) {
        for (int v = 0; v < 4; v++) {
            if (v == 1 && !has512)
                continue;
            uint64_t check = 0;
            double t = now();
            for (size_t off = 0; off + chunk <= got; off += chunk) {
                if (v == 0)
                    split_sym(buf + off, n, 2, 1, sym, planes, hist);
                else if (v == 1)
                    split_sym_512(buf + off, n, 2, 1, sym, planes, hist);
                else
                    split_only(buf + off, n, sym, planes);
                if (v == 3)
                    count_only(sym, n, hist);
                check += sym[5] + planes[7] + (v != 2 ? hist[sym[9]] : 0);
            }
            double dt = now() - t;
            printf("%-28s %.3f s  %.2f GB/s  (%llu)\n", split_names[v], dt, got / dt / 1e9,
                   (unsigned long long)check);
        }
        for (int v = 0; v < 2; v++) {
            double spent = 0;
            uint64_t check = 0;
            for (size_t off = 0; off + chunk <= got; off += chunk) {
                split_sym(buf + off, n, 2, 1, sym, planes, hist);
                uint8_t lens[HUF_NSYM];
                uint32_t codes[HUF_NSYM];
                huf_enc tab;
                huf_lengths(hist, lens, HUF_NSYM);
                huf_codes(lens, codes, HUF_NSYM);
                for (int s = 0; s < HUF_NSYM; s++) {
                    tab.code[s] = (uint16_t)codes[s];
                    tab.len[s] = (uint8_t)(codes[s] >> 16);
                }
                double t = now();
                for (int k = 0; k < HUF_STREAMS; k += v ? 4 : 2) {
                    bitw x[4];
                    for (int i = 0; i < 4; i++)
                        x[i] = (bitw){0, 0, out + (size_t)(k + i) % HUF_STREAMS * m * 2};
                    if (v == 0)
                        encode_pair(&x[0], &x[1], sym + k * m, sym + (k + 1) * m, 1, m, &tab);
                    else
                        encode_quad(&x[0], &x[1], &x[2], &x[3], sym + k * m, sym + (k + 1) * m,
                                    sym + (k + 2) * m, sym + (k + 3) * m, 1, m, &tab);
                    for (int i = 0; i < (v ? 4 : 2); i++)
                        check += (uint64_t)(x[i].p - out);
                }
                spent += now() - t;
            }
            printf("%-28s %.3f s  %.2f Gsym/s  (%llu)\n",
                   v ? "Huffman, 4 streams at once" : "Huffman, 2 at once (module)", spent,
                   got / 2 / spent / 1e9, (unsigned long long)check);
        }
    }
    return 0;
}
