"""CUDA for edged's hot path: fused pre-processing and DetectNet_v2 candidate selection.

``kernels.cu`` holds the CUDA C; :mod:`.compiler` builds and caches it (pycuda, nvcc),
edged/cudacontext.py shares the primary context between threads, :mod:`.preprocessor` and
:mod:`.select` run the kernels, :mod:`.reference` is the numpy reference they are checked
against, :mod:`.linear_tables` the bilinear sampling tables (OpenCV's ``INTER_LINEAR_EXACT``)
both use and :mod:`.formats` the source pixel formats. Nothing here imports pycuda until it is used.
"""
