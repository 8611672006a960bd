// y[T, N] = x[T, K] W[N, K]^T (+ b[N]) on x86 CPUs with AVX2/FMA/F16C: the matrix products of
// engine/cpu_gemm.py (its docstring states the design; its `reference` functions are the
// torch oracles). x, y and every sum are fp32; W is stored in one of three forms (a fourth, F32,
// is a long input's buffer of one block's made weights, long_block):
//
//   F16   fp16 weights, packed [N/16][K][16] halves (fp16_gemm);
//   Q     int8 codes q packed [N/16][K][16] and fp32 scales s [N/16][K/G][16]: w = s * q
//         (q8_gemm with offsets NULL: GGUF's Q8_0, Q5_0, Q6_K blocks);
//   QM    as Q with fp32 offsets m in the layout of s: w = s * q - m (GGUF's Q4_K blocks).
//
// For each block of 16 outputs its K columns lie in order, so a block streams from memory once.
// A weight vector (8 outputs at one k) is made in registers (Q: one multiply, QM: then one
// subtraction, never fused: compiled with -ffp-contract=off, so w is exactly numpy's s * q - m,
// what gguf's dequantizers compute) and every output accumulates k = 0..K-1 in order, one FMA a
// step from 0.0, then adds its bias: the same arithmetic whatever T is and whichever kernel
// below computes it, so a row's outputs do not depend on the rows beside it. Kernels by rows x
// blocks: 1x4 (one row: 8 independent sums), 1x1, 2x2, 3x2, and 4-6 rows x 1 (krx1, up to 12
// sums: long inputs);
// each keeps its sums in the 16 AVX registers as named variables (arrays of vectors made GCC
// spill them). The form is a compile-time constant of each kernel's copy (always_inline), so
// the form's branch is folded away. Blocks are split between OpenMP threads; N must be a
// multiple of 32, G a power of two dividing K.
#include <immintrin.h>
#include <stdint.h>
#include <stdlib.h>
#define INLINE static inline __attribute__((always_inline))
enum form { F16, Q, QM, F32 };
struct weights {
    const uint16_t *half;     // F16: [N/16][K][16]
    const int8_t *codes;      // Q, QM: [N/16][K][16]
    const float *scale;       // Q, QM: [N/16][K/G][16]
    const float *offset;      // QM: [N/16][K/G][16]
    const float *dense;       // F32: one block [K][16], the block being computed (a long input's buffer)
    int64_t K;
    int group_shift;          // log2 G
};
// one block of 16 outputs: its columns, and the scales (offsets) of its first group
struct block { const void *columns; const float *scale, *offset; };
INLINE struct block block_at(const struct weights *w, const enum form f, int64_t blk) {
    struct block b = {0, 0, 0};
    if (f == F16) { b.columns = w->half + blk * w->K * 16; return b; }
    if (f == F32) { b.columns = w->dense; return b; }
    int64_t at = blk * (w->K >> w->group_shift) * 16;
    b.columns = w->codes + blk * w->K * 16;
    b.scale = w->scale + at;
    b.offset = f == QM ? w->offset + at : 0;
    return b;
}
// the block's 8 weights of outputs 8 * h .. + 7 at column k, which lies in group g (the
// kernels loop over groups, then over a group's columns, so a scale's address is fixed within
// a group; F16 has one group of K columns)
INLINE __m256 wv(const enum form f, const struct block *b, int64_t k, int h, int64_t g) {
    if (f == F16)
        return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)b->columns + k * 16 + 8 * h)));
    if (f == F32)
        return _mm256_loadu_ps((const float *)b->columns + k * 16 + 8 * h);
    __m256 q = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)((const int8_t *)b->columns + k * 16 + 8 * h))));
    __m256 v = _mm256_mul_ps(_mm256_loadu_ps(b->scale + g * 16 + 8 * h), q);
    return f == QM ? _mm256_sub_ps(v, _mm256_loadu_ps(b->offset + g * 16 + 8 * h)) : v;
}
INLINE int64_t group_of(const struct weights *w, const enum form f) { return f == F16 || f == F32 ? w->K : (int64_t)1 << w->group_shift; }
// for (k = 0; k < K; k++) as a loop over groups g and their columns k
#define COLUMNS const int64_t G_ = group_of(w, f); \
    for (int64_t g = 0; g * G_ < w->K; g++) for (int64_t k = g * G_; k < (g + 1) * G_; k++)
#define FMA(w, x, a) a = _mm256_fmadd_ps(w, x, a)
// step k of one input row xp on a block: its two sums += the block's two weight vectors times xp[k]
#define ROW(xp, lo, hi) do { __m256 bt_ = _mm256_broadcast_ss((xp) + k); FMA(w0, bt_, lo); FMA(w1, bt_, hi); } while (0)
INLINE void store(float *y, const float *b, int64_t n, __m256 v) {
    if (b) v = _mm256_add_ps(v, _mm256_loadu_ps(b + n));
    _mm256_storeu_ps(y + n, v);
}
// 1 row x 4 blocks (64 outputs from block nb)
INLINE void k1x4(const struct weights *w, const enum form f, const float *x, float *y, int64_t nb, const float *b) {
    const struct block blk0 = block_at(w, f, nb), blk1 = block_at(w, f, nb + 1), blk2 = block_at(w, f, nb + 2), blk3 = block_at(w, f, nb + 3);
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
    COLUMNS {
        __m256 xv = _mm256_broadcast_ss(x + k);
        FMA(wv(f, &blk0, k, 0, g), xv, a0); FMA(wv(f, &blk0, k, 1, g), xv, a1);
        FMA(wv(f, &blk1, k, 0, g), xv, a2); FMA(wv(f, &blk1, k, 1, g), xv, a3);
        FMA(wv(f, &blk2, k, 0, g), xv, a4); FMA(wv(f, &blk2, k, 1, g), xv, a5);
        FMA(wv(f, &blk3, k, 0, g), xv, a6); FMA(wv(f, &blk3, k, 1, g), xv, a7);
    }
    int64_t n = nb * 16;
    store(y, b, n, a0); store(y, b, n + 8, a1); store(y, b, n + 16, a2); store(y, b, n + 24, a3);
    store(y, b, n + 32, a4); store(y, b, n + 40, a5); store(y, b, n + 48, a6); store(y, b, n + 56, a7);
}
// 1 row x 1 block
INLINE void k1x1(const struct weights *w, const enum form f, const float *x, float *y, int64_t nb, const float *b) {
    const struct block blk0 = block_at(w, f, nb);
    __m256 a0 = _mm256_setzero_ps(), a1 = a0;
    COLUMNS {
        __m256 xv = _mm256_broadcast_ss(x + k);
        FMA(wv(f, &blk0, k, 0, g), xv, a0); FMA(wv(f, &blk0, k, 1, g), xv, a1);
    }
    store(y, b, nb * 16, a0); store(y, b, nb * 16 + 8, a1);
}
// 2 rows x 2 blocks
INLINE void k2x2(const struct weights *w, const enum form f, const float *x, float *y, int64_t N, int64_t nb, const float *b) {
    const struct block blk0 = block_at(w, f, nb), blk1 = block_at(w, f, nb + 1);
    __m256 a00 = _mm256_setzero_ps(), a01 = a00, a02 = a00, a03 = a00, a10 = a00, a11 = a00, a12 = a00, a13 = a00;
    const int64_t K = w->K;
    const float *x0 = x, *x1 = x + K;
    COLUMNS {
        __m256 w0 = wv(f, &blk0, k, 0, g), w1 = wv(f, &blk0, k, 1, g), w2 = wv(f, &blk1, k, 0, g), w3 = wv(f, &blk1, k, 1, g);
        __m256 b0 = _mm256_broadcast_ss(x0 + k), b1 = _mm256_broadcast_ss(x1 + k);
        FMA(w0, b0, a00); FMA(w1, b0, a01); FMA(w2, b0, a02); FMA(w3, b0, a03);
        FMA(w0, b1, a10); FMA(w1, b1, a11); FMA(w2, b1, a12); FMA(w3, b1, a13);
    }
    int64_t n = nb * 16;
    store(y, b, n, a00); store(y, b, n + 8, a01); store(y, b, n + 16, a02); store(y, b, n + 24, a03);
    store(y + N, b, n, a10); store(y + N, b, n + 8, a11); store(y + N, b, n + 16, a12); store(y + N, b, n + 24, a13);
}
// 3 rows x 2 blocks (12 accumulators; each weight vector made once and used 3 times)
INLINE void k3x2(const struct weights *w, const enum form f, const float *x, float *y, int64_t N, int64_t nb, const float *b) {
    const struct block blk0 = block_at(w, f, nb), blk1 = block_at(w, f, nb + 1);
    __m256 a00 = _mm256_setzero_ps(), a01 = a00, a02 = a00, a03 = a00, a10 = a00, a11 = a00, a12 = a00, a13 = a00,
           a20 = a00, a21 = a00, a22 = a00, a23 = a00;
    const int64_t K = w->K;
    const float *x0 = x, *x1 = x + K, *x2 = x + 2 * K;
    COLUMNS {
        __m256 b0 = _mm256_broadcast_ss(x0 + k), b1 = _mm256_broadcast_ss(x1 + k), b2 = _mm256_broadcast_ss(x2 + k);
        __m256 v = wv(f, &blk0, k, 0, g);
        FMA(v, b0, a00); FMA(v, b1, a10); FMA(v, b2, a20);
        v = wv(f, &blk0, k, 1, g);
        FMA(v, b0, a01); FMA(v, b1, a11); FMA(v, b2, a21);
        v = wv(f, &blk1, k, 0, g);
        FMA(v, b0, a02); FMA(v, b1, a12); FMA(v, b2, a22);
        v = wv(f, &blk1, k, 1, g);
        FMA(v, b0, a03); FMA(v, b1, a13); FMA(v, b2, a23);
    }
    int64_t n = nb * 16;
    store(y, b, n, a00); store(y, b, n + 8, a01); store(y, b, n + 16, a02); store(y, b, n + 24, a03);
    store(y + N, b, n, a10); store(y + N, b, n + 8, a11); store(y + N, b, n + 16, a12); store(y + N, b, n + 24, a13);
    store(y + 2 * N, b, n, a20); store(y + 2 * N, b, n + 8, a21); store(y + 2 * N, b, n + 16, a22); store(y + 2 * N, b, n + 24, a23);
}
// R (4, 5 or 6) rows x 1 block: 2R accumulators (R is a constant of each inlined copy, so the
// guards fold away); 6 rows for the long inputs (a prefill)
#define ROW_IF(i) if (R > i) ROW(x + i * K, a##i##0, a##i##1);
#define STORE_IF(i) if (R > i) { store(y + i * N, b, n, a##i##0); store(y + i * N, b, n + 8, a##i##1); }
INLINE void krx1(const struct weights *w, const enum form f, const int R, const float *x, float *y, int64_t N, int64_t nb,
                 const float *b) {
    const struct block blk0 = block_at(w, f, nb);
    __m256 a00 = _mm256_setzero_ps(), a01 = a00, a10 = a00, a11 = a00, a20 = a00, a21 = a00, a30 = a00, a31 = a00,
           a40 = a00, a41 = a00, a50 = a00, a51 = a00;
    const int64_t K = w->K;
    COLUMNS {
        __m256 w0 = wv(f, &blk0, k, 0, g), w1 = wv(f, &blk0, k, 1, g);
        ROW_IF(0) ROW_IF(1) ROW_IF(2) ROW_IF(3) ROW_IF(4) ROW_IF(5)
    }
    int64_t n = nb * 16;
    STORE_IF(0) STORE_IF(1) STORE_IF(2) STORE_IF(3) STORE_IF(4) STORE_IF(5)
}
// all T rows of one tile of 2 blocks (nb, nb + 1). The first chunk streams the tile's weights
// from memory, both blocks at once, which krx1 (one block at a time) does at half the speed; the
// later chunks find the tile (2 x K x 16 weights) in the cache, where krx1's 6 rows a sweep
// make each weight vector for the most rows (measured per row count, cpu_gemm.py)
INLINE void tile2(const struct weights *w, const enum form f, const float *x, int64_t T, float *y, int64_t N, int64_t nb,
                  const float *b) {
    // the first chunk streams the tile's weights from memory: at most 3 rows, both blocks at once
    int64_t r = T < 3 ? T : 3;
    if (r == 3) k3x2(w, f, x, y, N, nb, b);
    else if (r == 2) k2x2(w, f, x, y, N, nb, b);
    else { k1x1(w, f, x, y, nb, b); k1x1(w, f, x, y, nb + 1, b); }
    // the rest read them from the cache: up to 6 rows a block
    for (int64_t t = r; t < T; t += r) {
        r = T - t > 6 ? 6 : T - t;
        const float *xt = x + t * w->K; float *yt = y + t * N;
        if (r == 6) { krx1(w, f, 6, xt, yt, N, nb, b); krx1(w, f, 6, xt, yt, N, nb + 1, b); }
        else if (r == 5) { krx1(w, f, 5, xt, yt, N, nb, b); krx1(w, f, 5, xt, yt, N, nb + 1, b); }
        else if (r == 4) { krx1(w, f, 4, xt, yt, N, nb, b); krx1(w, f, 4, xt, yt, N, nb + 1, b); }
        else if (r == 3) { krx1(w, f, 3, xt, yt, N, nb, b); krx1(w, f, 3, xt, yt, N, nb + 1, b); }
        else if (r == 2) { krx1(w, f, 2, xt, yt, N, nb, b); krx1(w, f, 2, xt, yt, N, nb + 1, b); }
        else { k1x1(w, f, xt, yt, nb, b); k1x1(w, f, xt, yt, nb + 1, b); }
    }
}
// a long input (T >= LONG rows) from codes: each block's weights are made once into a buffer
// of fp32 (the values wv makes, so the same sums) that stays in the L2 cache while every row
// chunk reads it, instead of being made again for every chunk of 6 rows
#define LONG 16
INLINE void long_block(const struct weights *w, const enum form f, float *buf, const float *x, int64_t T, float *y,
                       int64_t N, int64_t nb, const float *b) {
    const struct block blk0 = block_at(w, f, nb);
    COLUMNS { _mm256_storeu_ps(buf + k * 16, wv(f, &blk0, k, 0, g)); _mm256_storeu_ps(buf + k * 16 + 8, wv(f, &blk0, k, 1, g)); }
    struct weights d = {0, 0, 0, 0, buf, w->K, 0};
    int64_t t = 0;
    while (t < T) {
        int64_t r = T - t;
        r = r == 7 ? 5 : r > 6 ? 6 : r;
        const float *xt = x + t * w->K; float *yt = y + t * N;
        if (r == 6) krx1(&d, F32, 6, xt, yt, N, nb, b);
        else if (r == 5) krx1(&d, F32, 5, xt, yt, N, nb, b);
        else if (r == 4) krx1(&d, F32, 4, xt, yt, N, nb, b);
        else { r = 1; k1x1(&d, F32, xt, yt, nb, b); }
        t += r;
    }
}
// a long product: the rows as BLOCK reads them (ROWS: x itself, or a laid-out copy that is freed
// after; 0 when it could not be made, and the product is then not computed: returns 0), then each
// thread makes one block's weights at a time into its buffer and multiplies every row by them
#define DEFINE_LONG(NAME, FORM, ATTR, BLOCK, ROWS) \
ATTR static int NAME(const struct weights *w, const float *x, int64_t T, const float *b, float *y, int64_t N, int threads) { \
    const float *rows = ROWS; \
    if (!rows) return 0; \
    _Pragma("omp parallel num_threads(threads)") \
    { \
        float *buf = aligned_alloc(64, (size_t)w->K * 16 * sizeof(float)); \
        _Pragma("omp for schedule(static)") \
        for (int64_t nb = 0; nb < N / 16; nb++) BLOCK(w, FORM, buf, rows, T, y, N, nb, b); \
        free(buf); \
    } \
    if (rows != x) free((void *)rows); \
    return 1; \
}
DEFINE_LONG(long_q, Q, , long_block, x)
DEFINE_LONG(long_qm, QM, , long_block, x)
// the whole product in form FORM: one function each, so that OpenMP's outlined loop bodies see
// the form as a constant (an inline function holding the pragma is outlined once, form and all)
// (ONE_ROW: 1 row x 4 blocks; TILE: all rows of 2 blocks; TILE4: all rows of 4 blocks, taken where
// the blocks come in fours and FOUR, a run-time condition, holds (0: never, and TILE4 is not called);
// ATTR: the target, for the AVX-512 copies below)
#define DEFINE_GEMM(NAME, FORM, ATTR, ONE_ROW, TILE, TILE4, FOUR) \
ATTR static void NAME(const struct weights *w, const float *x, int64_t T, const float *b, float *y, int64_t N, int threads) { \
    int64_t blocks = N / 16; \
    if (T == 1 && blocks % 4 == 0) { \
        _Pragma("omp parallel for schedule(static) num_threads(threads)") \
        for (int64_t nb = 0; nb < blocks; nb += 4) ONE_ROW(w, FORM, x, y, nb, b); \
    } else if (blocks % 4 == 0 && (FOUR)) { \
        _Pragma("omp parallel for schedule(static) num_threads(threads)") \
        for (int64_t nb = 0; nb < blocks; nb += 4) TILE4(w, FORM, x, T, y, N, nb, b); \
    } else { \
        _Pragma("omp parallel for schedule(static) num_threads(threads)") \
        for (int64_t nb = 0; nb < blocks; nb += 2) TILE(w, FORM, x, T, y, N, nb, b); \
    } \
}
DEFINE_GEMM(gemm_f16, F16, , k1x4, tile2, tile2, 0)
DEFINE_GEMM(gemm_q, Q, , k1x4, tile2, tile2, 0)
DEFINE_GEMM(gemm_qm, QM, , k1x4, tile2, tile2, 0)
// x [T, K], wp packed fp16 [N/16][K][16], b [N] or NULL, y [T, N]; N a multiple of 32
void fp16_gemm(const float *x, int64_t T, int64_t K, const uint16_t *wp, const float *b, float *y,
               int64_t N, int threads) {
    struct weights w = {wp, 0, 0, 0, 0, K, 0};
    gemm_f16(&w, x, T, b, y, N, threads);
}
// ---- long inputs on CPUs with AVX-512: the same sums, 16 lanes and up to 16 rows a sweep ----------
// A block's 16 outputs are one zmm vector: each lane still accumulates k = 0..K-1 in order, one
// FMA a step from 0.0 over the same fp32 weights (the buffer long_block's wv made), then adds the
// bias, so every output is bit for bit the AVX2 kernels' (tested); the products take half the
// instructions and a sweep makes each weight vector once for 16 rows. The input is first laid
// out in chunks of 16 rows, k-major (xc [T/16][K][16], the last chunk's missing rows zero), so
// a sweep reads its rows' 16 values at one k from one cache line. Compiled for avx512f by its
// target attribute and used only where the CPU has it (wide_available) and `use_wide` is set.
#define WIDE __attribute__((target("avx512f")))
#define WINLINE static inline __attribute__((always_inline)) WIDE
WINLINE void wstore(float *y, const float *b, int64_t n, __m512 v) {
    if (b) v = _mm512_add_ps(v, _mm512_loadu_ps(b + n));
    _mm512_storeu_ps(y + n, v);
}
#define WROW(i) if (R > i) a##i = _mm512_fmadd_ps(wz, _mm512_set1_ps(xk[i]), a##i);
#define WSTORE(i) if (R > i) wstore(y + i * N, b, n, a##i);
// R (1..16, a constant of each inlined copy) rows of one chunk xc [K][16] x one block of 16
// outputs from buf [K][16]
WINLINE void kwide(const float *buf, const int R, const float *xc, float *y, int64_t K, int64_t N, int64_t nb,
                   const float *b) {
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0,
           a8 = a0, a9 = a0, a10 = a0, a11 = a0, a12 = a0, a13 = a0, a14 = a0, a15 = a0;
    for (int64_t k = 0; k < K; k++) {
        const __m512 wz = _mm512_loadu_ps(buf + k * 16);
        const float *xk = xc + k * 16;
        WROW(0) WROW(1) WROW(2) WROW(3) WROW(4) WROW(5) WROW(6) WROW(7)
        WROW(8) WROW(9) WROW(10) WROW(11) WROW(12) WROW(13) WROW(14) WROW(15)
    }
    int64_t n = nb * 16;
    WSTORE(0) WSTORE(1) WSTORE(2) WSTORE(3) WSTORE(4) WSTORE(5) WSTORE(6) WSTORE(7)
    WSTORE(8) WSTORE(9) WSTORE(10) WSTORE(11) WSTORE(12) WSTORE(13) WSTORE(14) WSTORE(15)
}
#define WCASE(r) case r: kwide(buf, r, xc, yt, K, N, nb, b); break;
WINLINE void long_block_wide(const struct weights *w, const enum form f, float *buf, const float *xcs, int64_t T,
                             float *y, int64_t N, int64_t nb, const float *b) {
    const struct block blk0 = block_at(w, f, nb);
    const int64_t K = w->K;
    COLUMNS { _mm256_storeu_ps(buf + k * 16, wv(f, &blk0, k, 0, g)); _mm256_storeu_ps(buf + k * 16 + 8, wv(f, &blk0, k, 1, g)); }
    for (int64_t t = 0; t < T; t += 16) {
        const float *xc = xcs + t * K; float *yt = y + t * N;
        switch (T - t >= 16 ? 16 : (int)(T - t)) {
            WCASE(1) WCASE(2) WCASE(3) WCASE(4) WCASE(5) WCASE(6) WCASE(7) WCASE(8)
            WCASE(9) WCASE(10) WCASE(11) WCASE(12) WCASE(13) WCASE(14) WCASE(15) WCASE(16)
        }
    }
}
// x [T, K] -> xc [ceil(T/16)][K][16] (rows past T zero)
static float *chunked_rows(const float *x, int64_t T, int64_t K) {
    int64_t chunks = (T + 15) / 16;
    float *xc = aligned_alloc(64, (size_t)(chunks * K * 16) * sizeof(float));
    if (!xc) return 0;
    for (int64_t c = 0; c < chunks; c++)
        for (int64_t k = 0; k < K; k++)
            for (int64_t i = 0; i < 16; i++) {
                int64_t t = c * 16 + i;
                xc[(c * K + k) * 16 + i] = t < T ? x[t * K + k] : 0.0f;
            }
    return xc;
}
DEFINE_LONG(long_q_wide, Q, WIDE, long_block_wide, chunked_rows(x, T, w->K))
DEFINE_LONG(long_qm_wide, QM, WIDE, long_block_wide, chunked_rows(x, T, w->K))
// ---- few rows (a decoding pass's 1-15) on CPUs with AVX-512: the same sums, a block's 16 outputs a zmm ----
// The weight vector of a block at column k is made once as a zmm (16 codes -> fp32, times the
// scales, minus the offsets: the lanes of wv's two ymm halves, the same operations) and used for
// every row of the sweep; each lane accumulates k in order, one FMA a step from 0.0, then adds
// the bias, so every output is bit for bit the AVX2 kernels' (tested) with half the instructions.
// 1 row streams 4 blocks at once; 2-15 rows take 4 blocks and up to 6 rows a sweep (24 sums; 2
// blocks and up to 7 rows where the blocks do not come in fours).
WINLINE __m512 wz(const enum form f, const struct block *b, int64_t k, int64_t g) {
    __m512 q = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)((const int8_t *)b->columns + k * 16))));
    __m512 v = _mm512_mul_ps(_mm512_loadu_ps(b->scale + g * 16), q);
    return f == QM ? _mm512_sub_ps(v, _mm512_loadu_ps(b->offset + g * 16)) : v;
}
#define ZFMA(wv_, i, a) a = _mm512_fmadd_ps(wv_, _mm512_set1_ps(x[(i) * K + k]), a)
WINLINE void kz1x4(const struct weights *w, const enum form f, const float *x, float *y, int64_t nb, const float *b) {
    const struct block b0 = block_at(w, f, nb), b1 = block_at(w, f, nb + 1), b2 = block_at(w, f, nb + 2), b3 = block_at(w, f, nb + 3);
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    const int64_t K = w->K;
    COLUMNS {
        ZFMA(wz(f, &b0, k, g), 0, a0); ZFMA(wz(f, &b1, k, g), 0, a1);
        ZFMA(wz(f, &b2, k, g), 0, a2); ZFMA(wz(f, &b3, k, g), 0, a3);
    }
    int64_t n = nb * 16;
    wstore(y, b, n, a0); wstore(y, b, n + 16, a1); wstore(y, b, n + 32, a2); wstore(y, b, n + 48, a3);
}
#define ZROW(i) if (R > i) { ZFMA(v0, i, c##i##0); ZFMA(v1, i, c##i##1); }
#define ZSTORE(i) if (R > i) { wstore(y + i * N, b, n, c##i##0); wstore(y + i * N, b, n + 16, c##i##1); }
// R (1..7, a constant of each inlined copy) rows x 2 blocks
WINLINE void kzrx2(const struct weights *w, const enum form f, const int R, const float *x, float *y, int64_t N,
                   int64_t nb, const float *b) {
    const struct block b0 = block_at(w, f, nb), b1 = block_at(w, f, nb + 1);
    __m512 c00 = _mm512_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00,
           c40 = c00, c41 = c00, c50 = c00, c51 = c00, c60 = c00, c61 = c00;
    const int64_t K = w->K;
    COLUMNS {
        const __m512 v0 = wz(f, &b0, k, g), v1 = wz(f, &b1, k, g);
        ZROW(0) ZROW(1) ZROW(2) ZROW(3) ZROW(4) ZROW(5) ZROW(6)
    }
    int64_t n = nb * 16;
    ZSTORE(0) ZSTORE(1) ZSTORE(2) ZSTORE(3) ZSTORE(4) ZSTORE(5) ZSTORE(6)
}
#define Z4ROW(i) if (R > i) { ZFMA(v0, i, d##i##0); ZFMA(v1, i, d##i##1); ZFMA(v2, i, d##i##2); ZFMA(v3, i, d##i##3); }
#define Z4STORE(i) if (R > i) { wstore(y + i * N, b, n, d##i##0); wstore(y + i * N, b, n + 16, d##i##1); \
                                wstore(y + i * N, b, n + 32, d##i##2); wstore(y + i * N, b, n + 48, d##i##3); }
// R (1..6, a constant of each inlined copy) rows x 4 blocks (24 sums and 4 weight vectors of the
// 32 zmm registers): four blocks stream from memory at once, as kz1x4's one row does; two blocks
// a sweep (kzrx2) made a 2-row pass cost 1.4x a 1-row pass on an EPYC Zen 5
WINLINE void kzrx4(const struct weights *w, const enum form f, const int R, const float *x, float *y, int64_t N,
                   int64_t nb, const float *b) {
    const struct block b0 = block_at(w, f, nb), b1 = block_at(w, f, nb + 1), b2 = block_at(w, f, nb + 2), b3 = block_at(w, f, nb + 3);
    __m512 d00 = _mm512_setzero_ps(), d01 = d00, d02 = d00, d03 = d00, d10 = d00, d11 = d00, d12 = d00, d13 = d00,
           d20 = d00, d21 = d00, d22 = d00, d23 = d00, d30 = d00, d31 = d00, d32 = d00, d33 = d00,
           d40 = d00, d41 = d00, d42 = d00, d43 = d00, d50 = d00, d51 = d00, d52 = d00, d53 = d00;
    const int64_t K = w->K;
    COLUMNS {
        const __m512 v0 = wz(f, &b0, k, g), v1 = wz(f, &b1, k, g), v2 = wz(f, &b2, k, g), v3 = wz(f, &b3, k, g);
        Z4ROW(0) Z4ROW(1) Z4ROW(2) Z4ROW(3) Z4ROW(4) Z4ROW(5)
    }
    int64_t n = nb * 16;
    Z4STORE(0) Z4STORE(1) Z4STORE(2) Z4STORE(3) Z4STORE(4) Z4STORE(5)
}
#define Z4CASE(r) case r: kzrx4(w, f, r, xt, yt, N, nb, b); break;
WINLINE void tile4_wide(const struct weights *w, const enum form f, const float *x, int64_t T, float *y, int64_t N,
                        int64_t nb, const float *b) {
    for (int64_t t = 0; t < T; t += 6) {
        const float *xt = x + t * w->K; float *yt = y + t * N;
        switch (T - t >= 6 ? 6 : (int)(T - t)) { Z4CASE(1) Z4CASE(2) Z4CASE(3) Z4CASE(4) Z4CASE(5) Z4CASE(6) }
    }
}
#define ZCASE(r) case r: kzrx2(w, f, r, xt, yt, N, nb, b); break;
WINLINE void tile2_wide(const struct weights *w, const enum form f, const float *x, int64_t T, float *y, int64_t N,
                        int64_t nb, const float *b) {
    for (int64_t t = 0; t < T; t += 7) {
        const float *xt = x + t * w->K; float *yt = y + t * N;
        switch (T - t >= 7 ? 7 : (int)(T - t)) { ZCASE(1) ZCASE(2) ZCASE(3) ZCASE(4) ZCASE(5) ZCASE(6) ZCASE(7) }
    }
}
// 2-15 rows: 4 blocks a sweep where the blocks come in fours (every matrix of the default model), else 2
static int use_four = 1;              // set_four(0): 2 blocks a sweep always (A/B, tests)
void set_four(int on) { use_four = on; }
DEFINE_GEMM(few_q_wide, Q, WIDE, kz1x4, tile2_wide, tile4_wide, use_four)
DEFINE_GEMM(few_qm_wide, QM, WIDE, kz1x4, tile2_wide, tile4_wide, use_four)
static int use_wide = 1;              // set_wide(0): the AVX2 paths (A/B, tests)
int wide_available(void) { return __builtin_cpu_supports("avx512f") ? 1 : 0; }
void set_wide(int on) { use_wide = on; }

// x [T, K]; codes [N/16][K][16]; scale (and offset, or NULL) [N/16][K/G][16] with G = 2^group_shift
void q8_gemm(const float *x, int64_t T, int64_t K, const int8_t *codes, const float *scale, const float *offset,
             int group_shift, const float *b, float *y, int64_t N, int threads) {
    struct weights w = {0, codes, scale, offset, 0, K, group_shift};
    if (T >= LONG && use_wide && wide_available() && (offset ? long_qm_wide : long_q_wide)(&w, x, T, b, y, N, threads))
        return;
    if (T >= LONG) (offset ? long_qm : long_q)(&w, x, T, b, y, N, threads);
    else if (use_wide && wide_available()) (offset ? few_qm_wide : few_q_wide)(&w, x, T, b, y, N, threads);
    else (offset ? gemm_qm : gemm_q)(&w, x, T, b, y, N, threads);
}
