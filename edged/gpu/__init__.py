"""CUDA for edged's hot path: fused pre-processing and DetectNet_v2 decoding (pycuda, nvcc).

``kernels.cu`` holds the CUDA C; :mod:`.compiler` builds and caches it, :mod:`.context`
shares the primary context between threads, :mod:`.preprocessor` and :mod:`.decode` run the
kernels, :mod:`.reference` is the numpy reference they are checked against,
:mod:`.linear_tables` the bilinear sampling tables (OpenCV's ``INTER_LINEAR_EXACT``) both use and
:mod:`.formats` the source pixel formats. Nothing here imports pycuda until it is used.
"""
