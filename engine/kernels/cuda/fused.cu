// Fused kernels for dllm-lsp, compiled once per device with NVRTC (through cupy.RawModule).
//
// Design: every kernel is a template over the element type T with two extern "C" entry
// points, <name>_f32 and <name>_bf16 (no C++ name mangling, no name_expressions needed).
// bf16 travels as its raw 16-bit pattern (unsigned short), converted by bit shifts with
// round-to-nearest-even, so no cuda_bf16.h (or any header) is needed under NVRTC.
// Arithmetic is float32. Where torch rounds to bf16 after each elementwise op, the kernels
// round at the same places (round_to<T>) so the fused result matches the torch reference
// to within one bf16 ulp.
//
// Kernels:
//   rms_norm_*          one block per row: optional residual add, RMSNorm, weight multiply
//   rope_*              one thread per (b, head, t, pair i/i+D/2) of q then k, in place, strided
//   swiglu_*            elementwise silu(gate) * up, grid-stride loop
//   decision_partial_*  grid (chunks, rows): per chunk of the vocabulary one pass computing
//                       (max, index of max, second max, sum exp(x-max), sum exp(x-max)(x-max))
//   decision_finish     one warp per row: merges the chunk stats -> conf, argmax, entropy, margin
// No probabilities are ever written.

typedef unsigned short bf16_t;

#define NEG_INF (__int_as_float(0xff800000))
#define FULL_MASK 0xffffffffu
#define NO_INDEX 0x7fffffff

__device__ __forceinline__ int imin(int a, int b) { return a < b ? a : b; }

// ---- element conversion -------------------------------------------------------------------
__device__ __forceinline__ float load_f(float x) { return x; }
__device__ __forceinline__ float load_f(bf16_t x) { return __uint_as_float(((unsigned int)x) << 16); }

template <typename T> __device__ __forceinline__ T store_f(float x);
template <> __device__ __forceinline__ float store_f<float>(float x) { return x; }
template <> __device__ __forceinline__ bf16_t store_f<bf16_t>(float x) {
    unsigned int u = __float_as_uint(x);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (bf16_t)0x7fc0;      // NaN stays NaN
    u += 0x7fffu + ((u >> 16) & 1u);                                  // round to nearest even
    return (bf16_t)(u >> 16);
}

// x rounded to T's precision, as torch does after every bf16 elementwise op
template <typename T> __device__ __forceinline__ float round_to(float x) { return load_f(store_f<T>(x)); }

// ---- reductions ---------------------------------------------------------------------------
__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
    return v;
}

// sum over the block, returned to every thread (blockDim.x a multiple of 32, <= 1024)
__device__ float block_sum(float v) {
    __shared__ float partial[32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = (blockDim.x + 31) >> 5;
    v = warp_sum(v);
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    if (warp == 0) {
        float p = lane < nwarps ? partial[lane] : 0.f;
        p = warp_sum(p);
        if (lane == 0) partial[0] = p;
    }
    __syncthreads();
    return partial[0];
}

// ---- RMSNorm with residual add ------------------------------------------------------------
// x, residual, out, new_residual [rows, hidden] contiguous; weight [hidden]; grid = rows.
// new_residual = x + residual (rounded to T); out = round(round(h * rsqrt(mean(h^2) + eps)) * w).
template <typename T>
__device__ void rms_norm_impl(const T* __restrict__ x, const T* __restrict__ residual,
                              const T* __restrict__ weight, T* __restrict__ out,
                              T* __restrict__ new_residual, int has_residual, int hidden, float eps) {
    const long long base = (long long)blockIdx.x * hidden;
    float sumsq = 0.f;
    for (int j = threadIdx.x; j < hidden; j += blockDim.x) {
        float v = load_f(x[base + j]);
        if (has_residual) {
            v = round_to<T>(v + load_f(residual[base + j]));
            new_residual[base + j] = store_f<T>(v);
        }
        sumsq += v * v;
    }
    const float inv = rsqrtf(block_sum(sumsq) / (float)hidden + eps);
    for (int j = threadIdx.x; j < hidden; j += blockDim.x) {
        // each thread re-reads only the elements it wrote itself above
        const float v = has_residual ? load_f(new_residual[base + j]) : load_f(x[base + j]);
        out[base + j] = store_f<T>(round_to<T>(v * inv) * load_f(weight[j]));
    }
}

extern "C" __global__ void rms_norm_f32(const float* x, const float* residual, const float* weight,
                                        float* out, float* new_residual, int has_residual, int hidden,
                                        float eps) {
    rms_norm_impl<float>(x, residual, weight, out, new_residual, has_residual, hidden, eps);
}

extern "C" __global__ void rms_norm_bf16(const bf16_t* x, const bf16_t* residual, const bf16_t* weight,
                                         bf16_t* out, bf16_t* new_residual, int has_residual, int hidden,
                                         float eps) {
    rms_norm_impl<bf16_t>(x, residual, weight, out, new_residual, has_residual, hidden, eps);
}

// ---- RoPE (rotate-half), in place ---------------------------------------------------------
// x [B, H, T, D] with strides (sb, sh, st, 1); cos/sin [T, D] float32 contiguous.
// out[i] = x[i] cos[i] - x[i+D/2] sin[i];  out[i+D/2] = x[i+D/2] cos[i+D/2] + x[i] sin[i+D/2]
template <typename T>
__device__ __forceinline__ void rope_pair(T* __restrict__ x, long long idx, int heads, int seq, int half,
                                          long long sb, long long sh, long long st,
                                          const float* __restrict__ cos, const float* __restrict__ sin) {
    const int i = (int)(idx % half);
    long long r = idx / half;
    const int t = (int)(r % seq);
    r /= seq;
    const int h = (int)(r % heads);
    const long long b = r / heads;
    const long long off = b * sb + (long long)h * sh + (long long)t * st;
    const long long c = (long long)t * (2 * half);
    const float c1 = round_to<T>(cos[c + i]), s1 = round_to<T>(sin[c + i]);
    const float c2 = round_to<T>(cos[c + i + half]), s2 = round_to<T>(sin[c + i + half]);
    const float x1 = load_f(x[off + i]), x2 = load_f(x[off + i + half]);
    x[off + i] = store_f<T>(round_to<T>(x1 * c1) + round_to<T>(-x2 * s1));
    x[off + i + half] = store_f<T>(round_to<T>(x2 * c2) + round_to<T>(x1 * s2));
}

template <typename T>
__device__ void rope_impl(T* q, T* k, const float* cos, const float* sin, int hq, int hk, int seq, int half,
                          long long qsb, long long qsh, long long qst,
                          long long ksb, long long ksh, long long kst, long long nq, long long nk) {
    const long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx < nq) {
        rope_pair<T>(q, idx, hq, seq, half, qsb, qsh, qst, cos, sin);
    } else if (idx < nq + nk) {
        rope_pair<T>(k, idx - nq, hk, seq, half, ksb, ksh, kst, cos, sin);
    }
}

extern "C" __global__ void rope_f32(float* q, float* k, const float* cos, const float* sin, int hq, int hk,
                                    int seq, int half, long long qsb, long long qsh, long long qst,
                                    long long ksb, long long ksh, long long kst, long long nq, long long nk) {
    rope_impl<float>(q, k, cos, sin, hq, hk, seq, half, qsb, qsh, qst, ksb, ksh, kst, nq, nk);
}

extern "C" __global__ void rope_bf16(bf16_t* q, bf16_t* k, const float* cos, const float* sin, int hq, int hk,
                                     int seq, int half, long long qsb, long long qsh, long long qst,
                                     long long ksb, long long ksh, long long kst, long long nq, long long nk) {
    rope_impl<bf16_t>(q, k, cos, sin, hq, hk, seq, half, qsb, qsh, qst, ksb, ksh, kst, nq, nk);
}

// ---- SwiGLU -------------------------------------------------------------------------------
// out = round(round(silu(gate)) * up), all [n] contiguous
template <typename T>
__device__ void swiglu_impl(const T* __restrict__ gate, const T* __restrict__ up, T* __restrict__ out,
                            long long n) {
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        const float g = load_f(gate[i]);
        const float silu = round_to<T>(g / (1.f + expf(-g)));
        out[i] = store_f<T>(silu * load_f(up[i]));
    }
}

extern "C" __global__ void swiglu_f32(const float* gate, const float* up, float* out, long long n) {
    swiglu_impl<float>(gate, up, out, n);
}

extern "C" __global__ void swiglu_bf16(const bf16_t* gate, const bf16_t* up, bf16_t* out, long long n) {
    swiglu_impl<bf16_t>(gate, up, out, n);
}

// ---- decision: one pass over the vocabulary -----------------------------------------------
// Stats of a set of logits: m = max, idx = first index of m, m2 = largest other logit,
// s = sum exp(x - m), u = sum exp(x - m) (x - m). Empty set: s == 0. -inf logits are skipped.
// Then p(top) = 1/s, entropy = log s - u/s, margin = p(top) - p(second) = (1 - exp(m2 - m))/s.
struct Stat {
    float m, m2, s, u;
    int idx;
};

__device__ __forceinline__ Stat stat_empty() {
    Stat e;
    e.m = NEG_INF; e.m2 = NEG_INF; e.s = 0.f; e.u = 0.f; e.idx = NO_INDEX;
    return e;
}

// add logit v at index j (indices of one thread arrive in increasing order)
__device__ __forceinline__ void stat_push(Stat& st, float v, int j) {
    if (v == NEG_INF) return;
    if (st.s == 0.f) {
        st.m = v; st.m2 = NEG_INF; st.s = 1.f; st.u = 0.f; st.idx = j;
        return;
    }
    if (v > st.m) {                      // new max: rescale the sums to it
        const float d = st.m - v, e = expf(d);
        st.u = e * (st.u + d * st.s);
        st.s = st.s * e + 1.f;
        st.m2 = st.m; st.m = v; st.idx = j;
    } else {                             // ties keep the earlier index
        const float d = v - st.m, e = expf(d);
        st.s += e;
        st.u += e * d;
        st.m2 = fmaxf(st.m2, v);
    }
}

__device__ __forceinline__ Stat stat_merge(const Stat& a, const Stat& b) {
    if (b.s == 0.f) return a;
    if (a.s == 0.f) return b;
    const bool b_wins = (b.m > a.m) || (b.m == a.m && b.idx < a.idx);
    const Stat& hi = b_wins ? b : a;
    const Stat& lo = b_wins ? a : b;
    const float d = lo.m - hi.m, e = expf(d);     // d <= 0
    Stat r;
    r.m = hi.m;
    r.idx = hi.idx;
    r.m2 = fmaxf(hi.m2, lo.m);
    r.s = hi.s + lo.s * e;
    r.u = hi.u + e * (lo.u + d * lo.s);
    return r;
}

__device__ __forceinline__ Stat warp_reduce_stat(Stat st) {
    for (int o = 16; o > 0; o >>= 1) {
        Stat other;
        other.m = __shfl_down_sync(FULL_MASK, st.m, o);
        other.m2 = __shfl_down_sync(FULL_MASK, st.m2, o);
        other.s = __shfl_down_sync(FULL_MASK, st.s, o);
        other.u = __shfl_down_sync(FULL_MASK, st.u, o);
        other.idx = __shfl_down_sync(FULL_MASK, st.idx, o);
        st = stat_merge(st, other);      // lanes >= 32 - o merge garbage that lane 0 never reads
    }
    return st;                           // valid in lane 0
}

// valid in thread 0 (blockDim.x a multiple of 32, <= 1024)
__device__ Stat block_reduce_stat(Stat st) {
    __shared__ float sm[32], sm2[32], ss[32], su[32];
    __shared__ int si[32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = (blockDim.x + 31) >> 5;
    st = warp_reduce_stat(st);
    if (lane == 0) {
        sm[warp] = st.m; sm2[warp] = st.m2; ss[warp] = st.s; su[warp] = st.u; si[warp] = st.idx;
    }
    __syncthreads();
    if (warp == 0) {
        if (lane < nwarps) {
            st.m = sm[lane]; st.m2 = sm2[lane]; st.s = ss[lane]; st.u = su[lane]; st.idx = si[lane];
        } else {
            st = stat_empty();
        }
        st = warp_reduce_stat(st);
    }
    return st;
}

// logits [rows, vocab] with row stride `row_stride` (elements), unit column stride.
// grid (nchunks, rows); chunk c covers [c * chunk, min(vocab, (c + 1) * chunk)).
// part [rows, nchunks, 4] = (m, m2, s, u); part_idx [rows, nchunks]
template <typename T>
__device__ void decision_partial_impl(const T* __restrict__ logits, long long row_stride, int vocab, int chunk,
                                      float* __restrict__ part, int* __restrict__ part_idx) {
    const int row = blockIdx.y, c = blockIdx.x, nchunks = gridDim.x;
    const T* x = logits + (long long)row * row_stride;
    const int lo = c * chunk, hi = imin(vocab, lo + chunk);
    Stat st = stat_empty();
    for (int j = lo + threadIdx.x; j < hi; j += blockDim.x) stat_push(st, load_f(x[j]), j);
    st = block_reduce_stat(st);
    if (threadIdx.x == 0) {
        const long long p = (long long)row * nchunks + c;
        part[4 * p] = st.m;
        part[4 * p + 1] = st.m2;
        part[4 * p + 2] = st.s;
        part[4 * p + 3] = st.u;
        part_idx[p] = st.idx;
    }
}

extern "C" __global__ void decision_partial_f32(const float* logits, long long row_stride, int vocab, int chunk,
                                                float* part, int* part_idx) {
    decision_partial_impl<float>(logits, row_stride, vocab, chunk, part, part_idx);
}

extern "C" __global__ void decision_partial_bf16(const bf16_t* logits, long long row_stride, int vocab,
                                                 int chunk, float* part, int* part_idx) {
    decision_partial_impl<bf16_t>(logits, row_stride, vocab, chunk, part, part_idx);
}

// grid = rows, block = 32 (one warp). Outputs [rows]: conf, argmax (int64), entropy, margin.
// A row with no finite logit gets NaN statistics and argmax 0 (torch's log_softmax gives NaN).
extern "C" __global__ void decision_finish(const float* __restrict__ part, const int* __restrict__ part_idx,
                                           int nchunks, float* __restrict__ conf, long long* __restrict__ argmax,
                                           float* __restrict__ entropy, float* __restrict__ margin) {
    const int row = blockIdx.x;
    Stat st = stat_empty();
    for (int c = threadIdx.x; c < nchunks; c += 32) {
        const long long p = (long long)row * nchunks + c;
        Stat o;
        o.m = part[4 * p]; o.m2 = part[4 * p + 1]; o.s = part[4 * p + 2]; o.u = part[4 * p + 3];
        o.idx = part_idx[p];
        st = stat_merge(st, o);
    }
    st = warp_reduce_stat(st);
    if (threadIdx.x == 0) {
        if (st.s == 0.f) {
            const float nan = __int_as_float(0x7fc00000);
            conf[row] = nan; argmax[row] = 0; entropy[row] = nan; margin[row] = nan;
            return;
        }
        const float inv = 1.f / st.s;
        conf[row] = inv;
        argmax[row] = (long long)st.idx;
        entropy[row] = fmaxf(0.f, logf(st.s) - st.u * inv);
        margin[row] = (1.f - expf(st.m2 - st.m)) * inv;
    }
}
