// Runs edged/gpu/kernels.cu's kernels on the CPU: every (block, thread) of the CUDA grid in turn.
#include "shim.h"
#include "kernels.cu"

template <typename F>
static void grid_loop(unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, F body) {
    blockDim = {bx, by, 1};
    gridDim = {gx, gy, gz};
    for (unsigned z = 0; z < gz; ++z)
        for (unsigned y = 0; y < gy; ++y)
            for (unsigned x = 0; x < gx; ++x)
                for (unsigned ty = 0; ty < by; ++ty)
                    for (unsigned tx = 0; tx < bx; ++tx) {
                        blockIdx = {x, y, z};
                        threadIdx = {tx, ty, 0};
                        body();
                    }
}

// gx: the grid's width in blocks of 32 threads; 0: the fewest the kernel's edged_columns allow
extern "C" void host_preprocess(int linear, int half, const long long* descs, void* dst, int n,
                                int dw, int dh, const float* ab, int bgr, unsigned gx) {
    unsigned across = 32 * edged_columns, gy = (dh + 7) / 8;
    if (gx == 0) gx = (dw + across - 1) / across;
    grid_loop(gx, gy, n, 32, 8, [&] {
        if (linear && half)
            edged_preprocess_linear_float16(descs, (unsigned short*)dst, dw, dh, ab[0], ab[1], ab[2],
                                            ab[3], ab[4], ab[5], bgr);
        else if (linear)
            edged_preprocess_linear_float32(descs, (float*)dst, dw, dh, ab[0], ab[1], ab[2], ab[3],
                                            ab[4], ab[5], bgr);
        else if (half)
            edged_preprocess_nearest_float16(descs, (unsigned short*)dst, dw, dh, ab[0], ab[1], ab[2],
                                             ab[3], ab[4], ab[5], bgr);
        else
            edged_preprocess_nearest_float32(descs, (float*)dst, dw, dh, ab[0], ab[1], ab[2], ab[3],
                                             ab[4], ab[5], bgr);
    });
}

extern "C" void host_select(const float* cov, const float* bbox, const float* thresholds, int classes,
                            int gh, int gw, int images, unsigned* counts, unsigned* nonfinite,
                            int* cells, float* values) {
    int n = classes * gh * gw;
    grid_loop((n + 255) / 256, images, 1, 256, 1, [&] {
        edged_detectnet_select(cov, bbox, thresholds, classes, gh, gw, counts, nonfinite, cells,
                               values);
    });
}
