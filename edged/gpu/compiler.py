"""Compile edged's CUDA C (``kernels.cu``) with nvcc through pycuda, once, and cache the cubin.

The cubin is kept under the cache directory (``$CACHE_DIRECTORY/kernels`` under systemd, else
``~/.cache/edged/kernels``) in a file named by the SHA-256 of the source, the nvcc options, the
GPU architecture and nvcc's ``--version`` text, so a JetPack upgrade or another GPU compiles
afresh and nothing stale is loaded. nvcc is looked up beyond ``PATH``: a systemd service's
``PATH`` lacks ``/usr/local/cuda/bin``, where JetPack installs it.
"""

import atexit
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
import threading
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

from ..cudacontext import CudaContext, CudaUnavailableError
from ..statepaths import cache_dir

logger = logging.getLogger(__name__)

SOURCE_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kernels.cu")
#: where nvcc is looked for after PATH (JetPack and the CUDA installers put it there)
NVCC_DIRS = ("/usr/local/cuda/bin", "/usr/local/cuda-10.2/bin", "/opt/cuda/bin")
OPTIONS = ("-O3",)


def read_source() -> str:
    with open(SOURCE_FILE, encoding="utf-8") as f:
        return f.read()


def find_nvcc(environ: Optional[Mapping[str, str]] = None, dirs: Sequence[str] = NVCC_DIRS) -> str:
    """The nvcc to use: ``$CUDA_HOME``/``$CUDA_PATH``, then ``PATH``, then :data:`NVCC_DIRS`.

    Raises:
        CudaUnavailableError: none found (names every place looked at).
    """
    env = os.environ if environ is None else environ
    homes = [os.path.join(env[v], "bin") for v in ("CUDA_HOME", "CUDA_PATH") if env.get(v)]
    for folder in homes:
        if os.access(os.path.join(folder, "nvcc"), os.X_OK):
            return os.path.join(folder, "nvcc")
    found = shutil.which("nvcc", path=env.get("PATH", os.defpath))
    if found:
        return found
    for folder in dirs:
        if os.access(os.path.join(folder, "nvcc"), os.X_OK):
            return os.path.join(folder, "nvcc")
    raise CudaUnavailableError(
        "nvcc (the CUDA compiler) not found in {}: the CUDA pre-processor compiles its "
        "kernels with it; install the CUDA toolkit (JetPack's cuda-nvcc) or set "
        "pipeline.preprocess: cpu".format(", ".join(homes + ["PATH"] + list(dirs)))
    )


def nvcc_version(nvcc: str) -> str:
    try:
        out = subprocess.run(
            [nvcc, "--version"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60
        )
    except (OSError, subprocess.SubprocessError) as e:
        raise CudaUnavailableError(f"{nvcc} --version failed: {e}") from e
    return out.stdout.decode("utf-8", "replace")


def cache_key(source: str, options: Sequence[str], arch: str, version: str) -> str:
    h = hashlib.sha256()
    for part in (source, "\0".join(options), arch, version):
        h.update(part.encode("utf-8"))
        h.update(b"\0\0")
    return h.hexdigest()


def kernel_cache_dir(environ: Optional[Dict[str, str]] = None) -> str:
    """``kernels`` in edged's cache folder, beside ``engines``."""
    return os.path.join(cache_dir(environ), "kernels")


def compile_cubin(source: str, arch: str, cache_dir: Optional[str] = None) -> bytes:
    """The cubin of ``source`` for ``arch``, from the cache or compiled now (then cached)."""
    nvcc = find_nvcc()
    key = cache_key(source, OPTIONS, arch, nvcc_version(nvcc))
    folder = cache_dir or kernel_cache_dir()
    path = os.path.join(folder, f"{key}.cubin")
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        pass
    try:
        from pycuda.compiler import compile as pycuda_compile
    except ImportError as e:
        raise CudaUnavailableError(f"pycuda.compiler is missing: {e}") from e
    logger.info("compiling CUDA kernels for %s with %s", arch, nvcc)
    try:
        cubin = pycuda_compile(source, nvcc=nvcc, options=list(OPTIONS), no_extern_c=True,
                               arch=arch, cache_dir=False)  # fmt: skip
    except Exception as e:  # pycuda raises CompileError or a bare Exception for nvcc failures
        raise CudaUnavailableError(f"nvcc could not compile edged's kernels for {arch}: {e}") from e
    _store(folder, path, cubin)
    return cubin


def _store(folder: str, path: str, data: bytes) -> None:
    """Write ``path`` atomically; a cache that cannot be written only costs a recompile."""
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError as e:
        logger.warning("CUDA kernel cache %s not written: %s", folder, e)


_modules_lock = threading.Lock()
_modules: Dict[Tuple[int, str], Tuple[CudaContext, Any]] = {}


def load_module(ctx: CudaContext, cache_dir: Optional[str] = None) -> Any:
    """``kernels.cu`` loaded into ``ctx`` (call with ``ctx`` pushed); loaded once per process.

    A module is unloaded only at exit, with its context pushed: reloading a model (a new
    pre-processor) reuses it instead of loading and unloading code each time.
    """
    with _modules_lock:
        key = (ctx.ordinal, ctx.arch)
        if key not in _modules:
            cubin = compile_cubin(read_source(), ctx.arch, cache_dir)
            _modules[key] = (ctx, ctx.cuda.module_from_buffer(cubin))
        return _modules[key][1]


@atexit.register
def _unload_modules() -> None:
    with _modules_lock:
        while _modules:
            _, (ctx, module) = _modules.popitem()
            with ctx.activated():
                del module
