// Host stand-ins for the CUDA built-ins edged/gpu/kernels.cu uses, so that g++ compiles the
// kernels for the CPU and tests/test_gpu_kernels_host.py runs them (one loop iteration per
// CUDA thread) against the numpy reference on a machine without a GPU. Same IEEE float32/64
// operations: each _rn intrinsic is one plain operation, compiled with -ffp-contract=off.
#include <cmath>
#include <cstring>

#define __device__
#define __global__
#define __constant__
#define __forceinline__ inline
#define __restrict__ __restrict

struct Dim3 {
    unsigned x, y, z;
};
static Dim3 blockIdx, threadIdx, blockDim, gridDim;

struct uchar4 {
    unsigned char x, y, z, w;
};

template <typename T>
static inline T __ldg(const T* p) { return *p; }
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __fadd_rn(float a, float b) { return a + b; }
static inline float __fsub_rn(float a, float b) { return a - b; }
static inline float __fdiv_rn(float a, float b) { return a / b; }
static inline double __dmul_rn(double a, double b) { return a * b; }
static inline double __dadd_rn(double a, double b) { return a + b; }
static inline double __dsub_rn(double a, double b) { return a - b; }
static inline float __double2float_rn(double d) { return (float)d; }
static inline int __float2int_rn(float v) { return (int)std::nearbyint(v); }  // half to even
static inline int min(int a, int b) { return a < b ? a : b; }

static inline unsigned atomicAdd(unsigned* p, unsigned v) {
    unsigned old = *p;
    *p += v;
    return old;
}
using std::isfinite;
using std::isnan;

static inline unsigned short edged_host_f16(float v) {
    _Float16 h = (_Float16)v;  // round to nearest even
    unsigned short bits;
    std::memcpy(&bits, &h, 2);
    return bits;
}
#define EDGED_HOST_F16(v) edged_host_f16(v)
