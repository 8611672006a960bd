// y[T, N] = x[T, K] W[N, K]^T (+ b[N]) with W stored as fp16, x, y and the sums in fp32:
// the matrix products of engine/cpu_gemm.py (its docstring states the design; its `reference`
// is the torch oracle).
//
// W is packed as [N/16][K][16] halves: for each block of 16 outputs, its K columns in order, so
// a block streams from memory once. Every output accumulates k = 0..K-1 in order, one FMA per
// k from 0.0 (8 outputs a vector, the input broadcast), and then adds its bias: the same
// arithmetic whatever T is and whichever kernel below computes it, so a row's outputs do not
// depend on the rows beside it. Kernels by rows x blocks: 1x4 (one row: 8 independent sums),
// 1x1, 2x2, 3x2, 4x1, 6x1 (12 sums: long inputs); each keeps its sums in the 16 AVX registers
// (named variables: arrays of vectors made GCC spill them). Blocks are split between OpenMP
// threads; N must be a multiple of 32.
#include <immintrin.h>
#include <stdint.h>
#define LD(p) _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p)))
// step k of one input row xp on a block: its two sums += the block's two weight vectors times xp[k]
#define ROW(xp, lo, hi) do { __m256 bt_ = _mm256_broadcast_ss((xp) + k); \
        lo = _mm256_fmadd_ps(w0, bt_, lo); hi = _mm256_fmadd_ps(w1, bt_, hi); } while (0)
static inline void store(float *y, const float *b, int64_t n, __m256 v) {
    if (b) v = _mm256_add_ps(v, _mm256_loadu_ps(b + n));
    _mm256_storeu_ps(y + n, v);
}
// 1 row x 4 blocks (64 outputs from block nb)
static void k1x4(const uint16_t *wp, const float *x, int64_t K, float *y, int64_t nb, const float *b) {
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
    const uint16_t *p0 = wp + nb * K * 16, *p1 = p0 + K * 16, *p2 = p1 + K * 16, *p3 = p2 + K * 16;
    for (int64_t k = 0; k < K; k++) {
        __m256 xv = _mm256_broadcast_ss(x + k);
        a0 = _mm256_fmadd_ps(LD(p0 + k * 16), xv, a0); a1 = _mm256_fmadd_ps(LD(p0 + k * 16 + 8), xv, a1);
        a2 = _mm256_fmadd_ps(LD(p1 + k * 16), xv, a2); a3 = _mm256_fmadd_ps(LD(p1 + k * 16 + 8), xv, a3);
        a4 = _mm256_fmadd_ps(LD(p2 + k * 16), xv, a4); a5 = _mm256_fmadd_ps(LD(p2 + k * 16 + 8), xv, a5);
        a6 = _mm256_fmadd_ps(LD(p3 + k * 16), xv, a6); a7 = _mm256_fmadd_ps(LD(p3 + k * 16 + 8), xv, a7);
    }
    int64_t n = nb * 16;
    store(y, b, n, a0); store(y, b, n + 8, a1); store(y, b, n + 16, a2); store(y, b, n + 24, a3);
    store(y, b, n + 32, a4); store(y, b, n + 40, a5); store(y, b, n + 48, a6); store(y, b, n + 56, a7);
}
// 1 row x 1 block
static void k1x1(const uint16_t *wp, const float *x, int64_t K, float *y, int64_t nb, const float *b) {
    __m256 a0 = _mm256_setzero_ps(), a1 = a0;
    const uint16_t *p = wp + nb * K * 16;
    for (int64_t k = 0; k < K; k++) {
        __m256 xv = _mm256_broadcast_ss(x + k);
        a0 = _mm256_fmadd_ps(LD(p + k * 16), xv, a0); a1 = _mm256_fmadd_ps(LD(p + k * 16 + 8), xv, a1);
    }
    store(y, b, nb * 16, a0); store(y, b, nb * 16 + 8, a1);
}
// 2 rows x 2 blocks
static void k2x2(const uint16_t *wp, const float *x, int64_t K, float *y, int64_t N, int64_t nb, const float *b) {
    __m256 a00 = _mm256_setzero_ps(), a01 = a00, a02 = a00, a03 = a00, a10 = a00, a11 = a00, a12 = a00, a13 = a00;
    const uint16_t *p0 = wp + nb * K * 16, *p1 = p0 + K * 16;
    const float *x0 = x, *x1 = x + K;
    for (int64_t k = 0; k < K; k++) {
        __m256 w0 = LD(p0 + k * 16), w1 = LD(p0 + k * 16 + 8), w2 = LD(p1 + k * 16), w3 = LD(p1 + k * 16 + 8);
        __m256 b0 = _mm256_broadcast_ss(x0 + k), b1 = _mm256_broadcast_ss(x1 + k);
        a00 = _mm256_fmadd_ps(w0, b0, a00); a01 = _mm256_fmadd_ps(w1, b0, a01);
        a02 = _mm256_fmadd_ps(w2, b0, a02); a03 = _mm256_fmadd_ps(w3, b0, a03);
        a10 = _mm256_fmadd_ps(w0, b1, a10); a11 = _mm256_fmadd_ps(w1, b1, a11);
        a12 = _mm256_fmadd_ps(w2, b1, a12); a13 = _mm256_fmadd_ps(w3, b1, a13);
    }
    int64_t n = nb * 16;
    store(y, b, n, a00); store(y, b, n + 8, a01); store(y, b, n + 16, a02); store(y, b, n + 24, a03);
    store(y + N, b, n, a10); store(y + N, b, n + 8, a11); store(y + N, b, n + 16, a12); store(y + N, b, n + 24, a13);
}
// 3 rows x 2 blocks (12 accumulators; each weight vector converted once and used 3 times)
static void k3x2(const uint16_t *wp, const float *x, int64_t K, float *y, int64_t N, int64_t nb, const float *b) {
    __m256 a00 = _mm256_setzero_ps(), a01 = a00, a02 = a00, a03 = a00, a10 = a00, a11 = a00, a12 = a00, a13 = a00,
           a20 = a00, a21 = a00, a22 = a00, a23 = a00;
    const uint16_t *p0 = wp + nb * K * 16, *p1 = p0 + K * 16;
    const float *x0 = x, *x1 = x + K, *x2 = x + 2 * K;
    for (int64_t k = 0; k < K; k++) {
        __m256 b0 = _mm256_broadcast_ss(x0 + k), b1 = _mm256_broadcast_ss(x1 + k), b2 = _mm256_broadcast_ss(x2 + k);
        __m256 w = LD(p0 + k * 16);
        a00 = _mm256_fmadd_ps(w, b0, a00); a10 = _mm256_fmadd_ps(w, b1, a10); a20 = _mm256_fmadd_ps(w, b2, a20);
        w = LD(p0 + k * 16 + 8);
        a01 = _mm256_fmadd_ps(w, b0, a01); a11 = _mm256_fmadd_ps(w, b1, a11); a21 = _mm256_fmadd_ps(w, b2, a21);
        w = LD(p1 + k * 16);
        a02 = _mm256_fmadd_ps(w, b0, a02); a12 = _mm256_fmadd_ps(w, b1, a12); a22 = _mm256_fmadd_ps(w, b2, a22);
        w = LD(p1 + k * 16 + 8);
        a03 = _mm256_fmadd_ps(w, b0, a03); a13 = _mm256_fmadd_ps(w, b1, a13); a23 = _mm256_fmadd_ps(w, b2, a23);
    }
    int64_t n = nb * 16;
    store(y, b, n, a00); store(y, b, n + 8, a01); store(y, b, n + 16, a02); store(y, b, n + 24, a03);
    store(y + N, b, n, a10); store(y + N, b, n + 8, a11); store(y + N, b, n + 16, a12); store(y + N, b, n + 24, a13);
    store(y + 2 * N, b, n, a20); store(y + 2 * N, b, n + 8, a21); store(y + 2 * N, b, n + 16, a22); store(y + 2 * N, b, n + 24, a23);
}
// 4 rows x 1 block
static void k4x1(const uint16_t *wp, const float *x, int64_t K, float *y, int64_t N, int64_t nb, const float *b) {
    __m256 a00 = _mm256_setzero_ps(), a01 = a00, a10 = a00, a11 = a00, a20 = a00, a21 = a00, a30 = a00, a31 = a00;
    const uint16_t *p = wp + nb * K * 16;
    const float *x0 = x, *x1 = x + K, *x2 = x + 2 * K, *x3 = x + 3 * K;
    for (int64_t k = 0; k < K; k++) {
        __m256 w0 = LD(p + k * 16), w1 = LD(p + k * 16 + 8);
        ROW(x0, a00, a01);
        ROW(x1, a10, a11);
        ROW(x2, a20, a21);
        ROW(x3, a30, a31);
    }
    int64_t n = nb * 16;
    store(y, b, n, a00); store(y, b, n + 8, a01); store(y + N, b, n, a10); store(y + N, b, n + 8, a11);
    store(y + 2 * N, b, n, a20); store(y + 2 * N, b, n + 8, a21); store(y + 3 * N, b, n, a30); store(y + 3 * N, b, n + 8, a31);
}
// 6 rows x 1 block (12 accumulators): the long inputs (a prefill)
static void k6x1(const uint16_t *wp, const float *x, int64_t K, float *y, int64_t N, int64_t nb, const float *b) {
    __m256 a00 = _mm256_setzero_ps(), a01 = a00, a10 = a00, a11 = a00, a20 = a00, a21 = a00, a30 = a00, a31 = a00,
           a40 = a00, a41 = a00, a50 = a00, a51 = a00;
    const uint16_t *p = wp + nb * K * 16;
    const float *x0 = x, *x1 = x + K, *x2 = x + 2 * K, *x3 = x + 3 * K, *x4 = x + 4 * K, *x5 = x + 5 * K;
    for (int64_t k = 0; k < K; k++) {
        __m256 w0 = LD(p + k * 16), w1 = LD(p + k * 16 + 8);
        ROW(x0, a00, a01);
        ROW(x1, a10, a11);
        ROW(x2, a20, a21);
        ROW(x3, a30, a31);
        ROW(x4, a40, a41);
        ROW(x5, a50, a51);
    }
    int64_t n = nb * 16;
    store(y, b, n, a00); store(y, b, n + 8, a01); store(y + N, b, n, a10); store(y + N, b, n + 8, a11);
    store(y + 2 * N, b, n, a20); store(y + 2 * N, b, n + 8, a21); store(y + 3 * N, b, n, a30); store(y + 3 * N, b, n + 8, a31);
    store(y + 4 * N, b, n, a40); store(y + 4 * N, b, n + 8, a41); store(y + 5 * N, b, n, a50); store(y + 5 * N, b, n + 8, a51);
}
// all T rows of one tile of 2 blocks (nb, nb + 1), in chunks of 6, 4, 3, 2 or 1 rows
static void tile2(const uint16_t *wp, const float *x, int64_t T, int64_t K, float *y, int64_t N, int64_t nb, const float *b) {
    int64_t t = 0;
    while (t < T) {
        int64_t r = T - t;
        r = r > 8 ? 6 : r == 8 ? 4 : r == 7 ? 4 : r == 6 ? 3 : r == 5 ? 3 : r;
        const float *xt = x + t * K; float *yt = y + t * N;
        if (r == 6) { k6x1(wp, xt, K, yt, N, nb, b); k6x1(wp, xt, K, yt, N, nb + 1, b); }
        else if (r == 4) { k4x1(wp, xt, K, yt, N, nb, b); k4x1(wp, xt, K, yt, N, nb + 1, b); }
        else if (r == 3) k3x2(wp, xt, K, yt, N, nb, b);
        else if (r == 2) k2x2(wp, xt, K, yt, N, nb, b);
        else { k1x1(wp, xt, K, yt, nb, b); k1x1(wp, xt, K, yt, nb + 1, b); }
        t += r;
    }
}
// x [T, K], wp packed [N/16][K][16], b [N] or NULL, y [T, N]; N a multiple of 32
void fp16_gemm(const float *x, int64_t T, int64_t K, const uint16_t *wp, const float *b, float *y,
               int64_t N, int threads) {
    int64_t blocks = N / 16;
    if (T == 1 && blocks % 4 == 0) {
        #pragma omp parallel for schedule(static) num_threads(threads)
        for (int64_t nb = 0; nb < blocks; nb += 4) k1x4(wp, x, K, y, nb, b);
    } else {
        #pragma omp parallel for schedule(static) num_threads(threads)
        for (int64_t nb = 0; nb < blocks; nb += 2) tile2(wp, x, T, K, y, N, nb, b);
    }
}
