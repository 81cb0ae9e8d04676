"""GPU test gating: tests marked ``gpu`` run where pycuda, a CUDA GPU and nvcc are, else skip.

CI has no GPU: there every such test is reported skipped with the reason "no CUDA GPU/pycuda".
"""

import pytest

REASON = "no CUDA GPU/pycuda"


def cuda_problem():
    """None when the GPU tests can run, else why not."""
    from edged.cudacontext import CudaUnavailableError, probe
    from edged.gpu.compiler import find_nvcc

    problem = probe()
    if problem is None:
        try:
            find_nvcc()
        except CudaUnavailableError as e:
            return str(e)
    return problem


PROBLEM = cuda_problem()
HAVE_CUDA = PROBLEM is None
#: marks a test as needing the GPU; skipped with REASON (and the detail) where there is none
requires_gpu = [
    pytest.mark.gpu,
    pytest.mark.skipif(not HAVE_CUDA, reason=f"{REASON} ({PROBLEM})"),
]
