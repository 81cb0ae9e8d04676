// edged's CUDA kernels: fused pre-processing and DetectNet_v2 grid decoding.
//
// Plain CUDA C with nothing newer than CUDA 10.2 (JetPack 4.6) and no headers, so the same text
// compiles with nvcc 10.2/11.4/12.x/13 and NVRTC (tests/test_gpu_compile.py, compute_53/72/87).
// The bilinear resize is OpenCV's bit-exact INTER_LINEAR_EXACT in integers, from host-built
// sampling tables (edged/gpu/linear_tables.py), so a BGR frame gives the tensor of the CPU path
// bit for bit. Every float operation that the numpy reference (edged/gpu/reference.py) must
// reproduce is written with an explicit round-to-nearest intrinsic: the compiler may not fuse a
// multiply and an add into an FMA there, so the reference and the kernel compute the same values.

#define FMT_BGR 0
#define FMT_RGB 1
#define FMT_BGRX 2
#define FMT_RGBX 3
#define FMT_GRAY 4
#define FMT_NV12 5
#define FMT_I420 6
#define FMT_YUYV 7

// Frame descriptor: 9 x int64 per frame (edged/gpu/preprocessor.py fills them).
#define D_SRC 0
#define D_PLANE1 1
#define D_PLANE2 2
#define D_WIDTH 3
#define D_HEIGHT 4
#define D_PITCH 5
#define D_PITCH1 6
#define D_FORMAT 7
#define D_TABLE 8  // bilinear: dw column words then dh row words (linear_tables.frame_tables)
#define D_WORDS 9

// A sampling table word: first tap << TAB_SHIFT | weight of the second tap (0..256, 8 fractional
// bits); the first tap's weight is 256 minus that (linear_tables.py: SHIFT, WEIGHT_BITS).
#define TAB_SHIFT 9
#define TAB_ONE 256

#define MUL(a, b) __fmul_rn((a), (b))
#define ADD(a, b) __fadd_rn((a), (b))

typedef unsigned char u8;

struct Desc {
    const u8* src;
    const u8* plane1;
    const u8* plane2;
    int width, height;
    long long pitch, pitch1;
    int format;
    const int* table;
};

// One pixel as 8-bit RGB values.
struct Rgb {
    int r, g, b;
};

__device__ __forceinline__ Desc load_desc(const long long* __restrict__ descs, int n) {
    const long long* d = descs + (long long)n * D_WORDS;
    Desc s;
    s.src = (const u8*)__ldg(d + D_SRC);
    s.plane1 = (const u8*)__ldg(d + D_PLANE1);
    s.plane2 = (const u8*)__ldg(d + D_PLANE2);
    s.width = (int)__ldg(d + D_WIDTH);
    s.height = (int)__ldg(d + D_HEIGHT);
    s.pitch = __ldg(d + D_PITCH);
    s.pitch1 = __ldg(d + D_PITCH1);
    s.format = (int)__ldg(d + D_FORMAT);
    s.table = (const int*)__ldg(d + D_TABLE);
    return s;
}

__device__ __forceinline__ float clamp255(float v) { return fminf(fmaxf(v, 0.0f), 255.0f); }

// BT.601 limited range ("video range"), the matrix of OpenCV's COLOR_YUV2RGB_NV12/I420/YUY2:
// R = 1.164383 (Y-16) + 1.596027 (V-128), G = 1.164383 (Y-16) - 0.391762 (U-128) - 0.812968 (V-128),
// B = 1.164383 (Y-16) + 2.017232 (U-128), each clamped to [0, 255] and rounded half to even to
// 8 bits: the resize works on an 8-bit image, as OpenCV's does.
__device__ __forceinline__ Rgb yuv_to_rgb(int y, int u, int v) {
    float yy = MUL(1.164383f, (float)(y - 16));
    float uu = (float)(u - 128);
    float vv = (float)(v - 128);
    Rgb c;
    c.r = __float2int_rn(clamp255(ADD(yy, MUL(1.596027f, vv))));
    c.g = __float2int_rn(clamp255(ADD(ADD(yy, MUL(-0.391762f, uu)), MUL(-0.812968f, vv))));
    c.b = __float2int_rn(clamp255(ADD(yy, MUL(2.017232f, uu))));
    return c;
}

__device__ __forceinline__ Rgb rgb3(int r, int g, int b) {
    Rgb c;
    c.r = r;
    c.g = g;
    c.b = b;
    return c;
}

// The source pixel (x, y) as 8-bit RGB. The format is the same for a whole block (one frame
// per blockIdx.z), so the switch does not diverge.
__device__ __forceinline__ Rgb fetch(const Desc& s, int x, int y) {
    const u8* row = s.src + (long long)y * s.pitch;
    switch (s.format) {
    case FMT_BGR: {
        const u8* p = row + 3 * x;
        return rgb3(__ldg(p + 2), __ldg(p + 1), __ldg(p));
    }
    case FMT_RGB: {
        const u8* p = row + 3 * x;
        return rgb3(__ldg(p), __ldg(p + 1), __ldg(p + 2));
    }
    case FMT_BGRX: {
        uchar4 p = __ldg((const uchar4*)(row) + x);
        return rgb3(p.z, p.y, p.x);
    }
    case FMT_RGBX: {
        uchar4 p = __ldg((const uchar4*)(row) + x);
        return rgb3(p.x, p.y, p.z);
    }
    case FMT_GRAY: {
        int g = __ldg(row + x);
        return rgb3(g, g, g);
    }
    case FMT_NV12: {
        // chroma of the 2x2 block the pixel lies in (4:2:0, co-sited sampling not interpolated)
        const u8* uv = s.plane1 + (long long)(y >> 1) * s.pitch1 + (x & ~1);
        return yuv_to_rgb(__ldg(row + x), __ldg(uv), __ldg(uv + 1));
    }
    case FMT_I420: {
        long long off = (long long)(y >> 1) * s.pitch1 + (x >> 1);
        return yuv_to_rgb(__ldg(row + x), __ldg(s.plane1 + off), __ldg(s.plane2 + off));
    }
    default: {  // FMT_YUYV: Y0 U Y1 V for each pair of pixels
        const u8* p = row + 4 * (x >> 1);
        return yuv_to_rgb(__ldg(p + 2 * (x & 1)), __ldg(p + 1), __ldg(p + 3));
    }
    }
}

// EDGED_WIDE_LOADS: read the two horizontal taps of a 3-byte pixel (BGR/RGB) as 32-bit words
// instead of six byte loads. EDGED_COLUMNS: destination columns each thread writes. Both chosen
// by benchmarks/gpu_preprocess.py, which builds and times the alternatives (1080p BGR -> 960x544
// bilinear float32, batch 16, H100: benchmarks/results/gpu_preprocess.md).
#ifndef EDGED_WIDE_LOADS
#define EDGED_WIDE_LOADS 1
#endif
#ifndef EDGED_COLUMNS
#define EDGED_COLUMNS 1
#endif

// The host reads this to size the grid (edged/gpu/preprocessor.py): a launch must give
// gridDim.x * blockDim.x * EDGED_COLUMNS >= the destination width.
__constant__ int edged_columns = EDGED_COLUMNS;

// Pixels x and x + 1 of row y of a BGR/RGB frame from the aligned 32-bit words holding their 6
// bytes: 2 loads, or 3 when the bytes start at the last byte of a word; every word loaded holds
// one of the 6 bytes, so nothing outside the frame is read.
__device__ __forceinline__ void load_pair3(const Desc& s, int x, int y, Rgb* a, Rgb* b) {
    unsigned long long addr = (unsigned long long)(s.src + (long long)y * s.pitch + 3LL * x);
    const unsigned int* w = (const unsigned int*)(addr & ~3ULL);
    int shift = (int)(addr & 3ULL);
    unsigned long long v = ((unsigned long long)__ldg(w + 1) << 32) | __ldg(w);
    v >>= 8 * shift;
    if (shift == 3) v |= (unsigned long long)(__ldg(w + 2) & 0xffu) << 40;
    int b0 = (int)(v & 0xff), b1 = (int)((v >> 8) & 0xff), b2 = (int)((v >> 16) & 0xff);
    int b3 = (int)((v >> 24) & 0xff), b4 = (int)((v >> 32) & 0xff), b5 = (int)((v >> 40) & 0xff);
    if (s.format == FMT_BGR) {
        *a = rgb3(b2, b1, b0);
        *b = rgb3(b5, b4, b3);
    } else {
        *a = rgb3(b0, b1, b2);
        *b = rgb3(b3, b4, b5);
    }
}

// Taps and weights of destination index i from its table word (linear_tables.py): i1 is the
// neighbour of i0 inside the image; a border index has weight 0 on it.
__device__ __forceinline__ void linear_taps(const int* __restrict__ table, int i, int n, int* i0,
                                            int* i1, int* w0, int* w1) {
    int word = __ldg(table + i);
    *i0 = word >> TAB_SHIFT;
    *i1 = min(*i0 + 1, n - 1);
    *w1 = word & ((1 << TAB_SHIFT) - 1);
    *w0 = TAB_ONE - *w1;
}

// OpenCV's INTER_LINEAR_EXACT for 8 bits: each row's two taps summed exactly in 8.8 fixed point
// (at most 255 * 256), then the rows' 16.16 sum rounded half up to 8 bits (at most 255).
__device__ __forceinline__ float blend(int p00, int p01, int p10, int p11, int wx0, int wx1, int wy0,
                                       int wy1) {
    int top = p00 * wx0 + p01 * wx1;
    int bottom = p10 * wx0 + p11 * wx1;
    return (float)((top * wy0 + bottom * wy1 + (1 << 15)) >> 16);
}

__device__ __forceinline__ void store(float* out, long long i, float v) { out[i] = v; }

__device__ __forceinline__ void store(unsigned short* out, long long i, float v) {
    unsigned short h;
#ifdef __CUDACC__
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(v));  // round to nearest even, as numpy
#else
    h = EDGED_HOST_F16(v);  // tests/test_gpu_kernels_host.py compiles this file for the CPU
#endif
    out[i] = h;
}

// Thread (x, y) of frame blockIdx.z writes destination columns x, x + S, ... x + (EDGED_COLUMNS
// - 1) S of row y, S = gridDim.x * blockDim.x: each warp's loads and stores stay on neighbouring
// columns, the frame descriptor, scales and the row's source coordinates are computed once per
// thread, and the unrolled columns' loads are in flight together. Writes the 3 planes of frame z
// of the N x 3 x dh x dw tensor at dst: plane c = x * a[c] + b[c] of the model's channel c (RGB,
// or BGR when bgr != 0), x the resized 8-bit sample.
template <bool LINEAR, typename T>
__device__ __forceinline__ void preprocess(const long long* __restrict__ descs, T* __restrict__ dst,
                                           int dw, int dh, float a0, float a1, float a2, float b0,
                                           float b1, float b2, int bgr) {
    int y = blockIdx.y * blockDim.y + threadIdx.y;
    int x = blockIdx.x * blockDim.x + threadIdx.x;
    if (y >= dh || x >= dw) return;
    int step = gridDim.x * blockDim.x;
    int n = blockIdx.z;
    Desc s = load_desc(descs, n);
    float sx = __fdiv_rn((float)s.width, (float)dw);  // float32(src / dst), as the CPU path
    float sy = __fdiv_rn((float)s.height, (float)dh);
    int y0 = 0, y1 = 0, ys = 0, wy0 = TAB_ONE, wy1 = 0;
    if (LINEAR) {
        linear_taps(s.table + dw, y, s.height, &y0, &y1, &wy0, &wy1);
    } else {
        // jetson-inference's nearest: src index = int(float32(y) * float32(src / dst))
        ys = min((int)MUL((float)y, sy), s.height - 1);
    }
    long long plane = (long long)dw * dh;
    T* out = dst + (long long)n * 3 * plane + (long long)y * dw;
#pragma unroll
    for (int k = 0; k < EDGED_COLUMNS; ++k) {
        int xk = x + k * step;
        if (xk >= dw) break;
        float cr, cg, cb;
        if (LINEAR) {
            int x0, x1, wx0, wx1;
            linear_taps(s.table, xk, s.width, &x0, &x1, &wx0, &wx1);
            Rgb p00, p01, p10, p11;
            if (EDGED_WIDE_LOADS && (s.format == FMT_BGR || s.format == FMT_RGB) && x1 == x0 + 1) {
                load_pair3(s, x0, y0, &p00, &p01);
                load_pair3(s, x0, y1, &p10, &p11);
            } else {
                p00 = fetch(s, x0, y0);
                p01 = fetch(s, x1, y0);
                p10 = fetch(s, x0, y1);
                p11 = fetch(s, x1, y1);
            }
            cr = blend(p00.r, p01.r, p10.r, p11.r, wx0, wx1, wy0, wy1);
            cg = blend(p00.g, p01.g, p10.g, p11.g, wx0, wx1, wy0, wy1);
            cb = blend(p00.b, p01.b, p10.b, p11.b, wx0, wx1, wy0, wy1);
        } else {
            int xs = min((int)MUL((float)xk, sx), s.width - 1);
            Rgb c = fetch(s, xs, ys);
            cr = (float)c.r;
            cg = (float)c.g;
            cb = (float)c.b;
        }
        float first = bgr ? cb : cr;
        float last = bgr ? cr : cb;
        store(out, xk, ADD(MUL(first, a0), b0));
        store(out, xk + plane, ADD(MUL(cg, a1), b1));
        store(out, xk + 2 * plane, ADD(MUL(last, a2), b2));
    }
}

#define PREPROCESS_KERNEL(NAME, LINEAR, T)                                                           \
    extern "C" __global__ void NAME(const long long* __restrict__ descs, T* __restrict__ dst, int dw, \
                                    int dh, float a0, float a1, float a2, float b0, float b1,        \
                                    float b2, int bgr) {                                             \
        preprocess<LINEAR, T>(descs, dst, dw, dh, a0, a1, a2, b0, b1, b2, bgr);                      \
    }

PREPROCESS_KERNEL(edged_preprocess_nearest_float32, false, float)
PREPROCESS_KERNEL(edged_preprocess_linear_float32, true, float)
PREPROCESS_KERNEL(edged_preprocess_nearest_float16, false, unsigned short)
PREPROCESS_KERNEL(edged_preprocess_linear_float16, true, unsigned short)

// DetectNet_v2 candidate selection for an exact decode on the host (edged/gpu/select.py): one
// thread per (class, row, column) cell of image blockIdx.y. A cell whose coverage reaches its
// class threshold (>=: a superset of what every detection.compat keeps; NaN never does) takes a
// slot from its image's counter and writes its cell index, its coverage and its four bbox terms,
// unchanged; the host puts them into otherwise empty grids and runs the compat's own decode on
// them. Every thread also counts the non-finite values among its cell's coverage and terms, for
// a model update's probation (edged/pipeline/worker.py counts frames whose outputs hold them).
extern "C" __global__ void edged_detectnet_select(
    const float* __restrict__ cov, const float* __restrict__ bbox, const float* __restrict__ thresholds,
    int classes, int grid_h, int grid_w, unsigned int* __restrict__ counts,
    unsigned int* __restrict__ nonfinite, int* __restrict__ cells, float* __restrict__ values) {
    int cells_per_image = classes * grid_h * grid_w;
    int cell = blockIdx.x * blockDim.x + threadIdx.x;
    if (cell >= cells_per_image) return;
    int image = blockIdx.y;
    int plane = grid_h * grid_w;
    int c = cell / plane;
    int rc = cell - c * plane;
    float score = cov[(long long)image * cells_per_image + cell];
    const float* t = bbox + (long long)image * 4 * cells_per_image + (long long)(4 * c) * plane + rc;
    float t0 = t[0], t1 = t[plane], t2 = t[2 * plane], t3 = t[3 * plane];
    unsigned int bad = (isfinite(score) ? 0u : 1u) + (isfinite(t0) ? 0u : 1u) +
                       (isfinite(t1) ? 0u : 1u) + (isfinite(t2) ? 0u : 1u) + (isfinite(t3) ? 0u : 1u);
    if (bad) atomicAdd(nonfinite + image, bad);
    if (!(score >= thresholds[c])) return;
    unsigned int slot = atomicAdd(counts + image, 1u);
    long long at = (long long)image * cells_per_image + slot;
    cells[at] = cell;
    float* v = values + at * 5;
    v[0] = score;
    v[1] = t0;
    v[2] = t1;
    v[3] = t2;
    v[4] = t3;
}
