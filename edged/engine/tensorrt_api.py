"""Moved to :mod:`edged.backends.tensorrt_api` (edged.backends sits below edged.engine).

Kept only while edged/backends/tensorrt_backend.py still imports it from here; new code imports
:mod:`edged.backends.tensorrt_api`. tests/test_import_cycles.py names this edge.
"""

from ..backends.tensorrt_api import (  # noqa: F401
    MODULE_CANDIDATES,
    CapturingLogger,
    Features,
    host_memory_bytes,
    import_tensorrt,
    module_name,
    recent_errors,
    version_of,
)
