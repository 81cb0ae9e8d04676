// The two-pass pre-processing that jetson-utils and DeepStream do, for the GPU benchmark only:
// pass 1 resizes BGR to an 8-bit RGB image (bilinear, edged's sampling formula, rounded to 8
// bits); pass 2 reads it back and writes planar x * a + b float32. edged fuses both in one
// kernel (edged/gpu/kernels.cu); this is the contender it is measured against.
typedef unsigned char u8;

extern "C" __global__ void twopass_resize_rgb8(const u8* __restrict__ src, int sw, int sh, int pitch,
                                               u8* __restrict__ dst, int dw, int dh) {
    int x = blockIdx.x * blockDim.x + threadIdx.x;
    int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= dw || y >= dh) return;
    int n = blockIdx.z;
    const u8* img = src + (long long)n * sh * pitch;
    float sx = (float)sw / (float)dw, sy = (float)sh / (float)dh;
    float fx = fmaxf((x + 0.5f) * sx - 0.5f, 0.0f), fy = fmaxf((y + 0.5f) * sy - 0.5f, 0.0f);
    int x0 = (int)fx, y0 = (int)fy;
    float wx = fx - x0, wy = fy - y0;
    if (x0 >= sw - 1) { x0 = sw - 1; wx = 0.0f; }
    if (y0 >= sh - 1) { y0 = sh - 1; wy = 0.0f; }
    int x1 = min(x0 + 1, sw - 1), y1 = min(y0 + 1, sh - 1);
    u8* out = dst + ((long long)n * dh * dw + (long long)y * dw + x) * 3;
    for (int c = 0; c < 3; ++c) {
        int bc = 2 - c;  // BGR source, RGB destination
        float p00 = __ldg(img + (long long)y0 * pitch + 3 * x0 + bc);
        float p01 = __ldg(img + (long long)y0 * pitch + 3 * x1 + bc);
        float p10 = __ldg(img + (long long)y1 * pitch + 3 * x0 + bc);
        float p11 = __ldg(img + (long long)y1 * pitch + 3 * x1 + bc);
        float v = (p00 * (1 - wx) + p01 * wx) * (1 - wy) + (p10 * (1 - wx) + p11 * wx) * wy;
        out[c] = (u8)min(max(__float2int_rn(v), 0), 255);
    }
}

extern "C" __global__ void twopass_normalise(const u8* __restrict__ src, float* __restrict__ dst,
                                             int dw, int dh, float a0, float a1, float a2, float b0,
                                             float b1, float b2) {
    int x = blockIdx.x * blockDim.x + threadIdx.x;
    int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= dw || y >= dh) return;
    int n = blockIdx.z;
    long long plane = (long long)dw * dh;
    long long p = (long long)y * dw + x;
    const u8* px = src + (n * plane + p) * 3;
    float* out = dst + n * 3 * plane + p;
    out[0] = __ldg(px) * a0 + b0;
    out[plane] = __ldg(px + 1) * a1 + b1;
    out[2 * plane] = __ldg(px + 2) * a2 + b2;
}
