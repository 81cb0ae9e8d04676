"""What the engine was (or would be) built for: TensorRT, CUDA, L4T, GPU.

"Serialized engines are not portable across platforms or TensorRT versions" and are "specific to
the exact GPU model they were built on" (TensorRT support matrix; NVIDIA developer forum), so
these values are part of the cache key and of every manifest. The probes read what the machine
offers, in order, and never fail:

* GPU name, compute capability, CUDA and driver versions: pycuda when it
  imports, else ``nvidia-smi``, else
  ``/proc/driver/nvidia``, else the Jetson device tree (tegra210 = Nano 5.3,
  tegra194 = Xavier 7.2; dusty-nv/jetson-containers ``l4t_version.py``), else ``"none"``.
* CUDA toolkit: pycuda, else ``/usr/local/cuda/version.json`` / ``version.txt``.
* L4T release: ``/etc/nv_tegra_release`` (``# R32 (release), REVISION: 7.1`` -> ``R32.7.1``).

Everything is behind :class:`PlatformProvider` so tests (and CI without a
GPU) can change the GPU identity or the TensorRT version they report.
"""

import glob
import json
import logging
import os
import re
import subprocess
from typing import Any, Callable, Dict, Optional

from ..backends.tensorrt_api import module_name, version_of

logger = logging.getLogger(__name__)

NONE = "none"
NV_TEGRA_RELEASE = "/etc/nv_tegra_release"
#: Jetson SoC -> (GPU, compute capability) (dusty-nv/jetson-containers ``l4t_version.py``).
TEGRA_GPUS = {
    "tegra210": ("NVIDIA Tegra X1", "5.3"),
    "tegra186": ("NVIDIA Tegra X2", "6.2"),
    "tegra194": ("NVIDIA Tegra Xavier", "7.2"),
    "tegra234": ("NVIDIA Tegra Orin", "8.7"),
}
NVIDIA_SMI_TIMEOUT_S = 10.0

ENVIRONMENT_KEYS = (
    "tensorrt_module",
    "tensorrt_version",
    "cuda_version",
    "cuda_driver_version",
    "l4t_release",
    "gpu_name",
    "compute_capability",
)


class GpuInfo:
    """GPU identity and CUDA versions as one probe saw them (strings; ``none`` if unknown)."""

    __slots__ = ("name", "compute_capability", "cuda_version", "driver_version", "source")

    def __init__(
        self,
        name: str = NONE,
        compute_capability: str = NONE,
        cuda_version: str = NONE,
        driver_version: str = NONE,
        source: str = NONE,
    ) -> None:
        self.name = name
        self.compute_capability = compute_capability
        self.cuda_version = cuda_version
        self.driver_version = driver_version
        self.source = source

    def __repr__(self) -> str:
        return (
            f"GpuInfo({self.name!r}, sm {self.compute_capability}, cuda {self.cuda_version}, "
            f"driver {self.driver_version}, from {self.source})"
        )


class PlatformInfo:
    """The build environment part of the cache key (:data:`ENVIRONMENT_KEYS`)."""

    def __init__(self, **values: str) -> None:
        missing = set(ENVIRONMENT_KEYS) - set(values)
        if missing:
            raise TypeError("missing: {}".format(", ".join(sorted(missing))))
        self._values = {k: str(values[k]) for k in ENVIRONMENT_KEYS}

    def as_dict(self) -> Dict[str, str]:
        return dict(self._values)

    def replace(self, **changes: str) -> "PlatformInfo":
        values = self.as_dict()
        values.update(changes)
        return PlatformInfo(**values)

    def __getattr__(self, name: str) -> str:
        values = self.__dict__.get("_values", {})
        if name in values:
            return values[name]
        raise AttributeError(name)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PlatformInfo) and self._values == other._values

    def __repr__(self) -> str:
        return f"PlatformInfo({self._values})"


class PlatformProvider:
    """Describes the live platform for a TensorRT module. Subclass or replace in tests."""

    def __call__(self, trt: Any) -> PlatformInfo:
        raise NotImplementedError


class LivePlatform(PlatformProvider):
    """The real probes; each path and probe is a constructor argument tests can change."""

    def __init__(
        self,
        nv_tegra_release: str = NV_TEGRA_RELEASE,
        gpu_probe: Optional[Callable[[], GpuInfo]] = None,
        cuda_root: str = "/usr/local/cuda",
    ) -> None:
        self._nv_tegra_release = nv_tegra_release
        self._gpu_probe = gpu_probe or probe_gpu
        self._cuda_root = cuda_root
        self._gpu = None  # type: Optional[GpuInfo]

    def gpu(self) -> GpuInfo:
        if self._gpu is None:  # the GPU does not change while we run; nvidia-smi is slow
            self._gpu = self._gpu_probe()
            logger.debug("GPU probe: %r", self._gpu)
        return self._gpu

    def __call__(self, trt: Any) -> PlatformInfo:
        gpu = self.gpu()
        cuda = gpu.cuda_version if gpu.cuda_version != NONE else read_cuda_toolkit(self._cuda_root)
        return PlatformInfo(
            tensorrt_module=module_name(trt),
            tensorrt_version=version_of(trt),
            cuda_version=cuda,
            cuda_driver_version=gpu.driver_version,
            l4t_release=read_l4t_release(self._nv_tegra_release),
            gpu_name=gpu.name,
            compute_capability=gpu.compute_capability,
        )


# -- L4T and CUDA files -----------------------------------------------------------------------

_L4T = re.compile(r"#\s*R(\d+)\s*\(release\),\s*REVISION:\s*([0-9.]+)")


def read_l4t_release(path: str = NV_TEGRA_RELEASE) -> str:
    """``R32.7.1`` from ``/etc/nv_tegra_release``; ``none`` off a Jetson or if unreadable."""
    try:
        with open(path) as f:
            first = f.readline()
    except OSError:
        return NONE
    match = _L4T.search(first)
    if not match:
        logger.warning("%s: unexpected first line %r; using it verbatim", path, first.strip())
        return first.strip()[:80] or NONE
    return f"R{match.group(1)}.{match.group(2)}"


def read_cuda_toolkit(cuda_root: str = "/usr/local/cuda") -> str:
    """The CUDA toolkit version from ``version.json`` (CUDA >= 11) or ``version.txt`` (10.x)."""
    try:
        with open(os.path.join(cuda_root, "version.json")) as f:
            return str(json.load(f)["cuda"]["version"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    try:
        with open(os.path.join(cuda_root, "version.txt")) as f:
            match = re.search(r"CUDA Version\s+([0-9.]+)", f.read())
            if match:
                return match.group(1)
    except OSError:
        pass
    return NONE


# -- GPU probes -------------------------------------------------------------------------------


def probe_gpu() -> GpuInfo:
    """The first probe that answers: pycuda, nvidia-smi, /proc/driver/nvidia, device tree."""
    for probe in (probe_pycuda, probe_nvidia_smi, probe_proc_driver, probe_tegra):
        info = probe()
        if info is not None:
            return info
    return GpuInfo()


def probe_pycuda() -> Optional[GpuInfo]:
    try:
        import pycuda.driver as drv
    except ImportError:
        return None
    try:
        drv.init()
        if drv.Device.count() < 1:
            return None
        dev = drv.Device(0)
        major, minor = dev.compute_capability()
        return GpuInfo(
            name=str(dev.name()),
            compute_capability=f"{major}.{minor}",
            cuda_version=".".join(str(v) for v in drv.get_version()),
            driver_version=str(drv.get_driver_version()),
            source="pycuda",
        )
    except drv.Error as e:  # no driver, no device, no permission on /dev/nvhost-*
        logger.debug("pycuda GPU probe failed: %s", e)
        return None


def probe_nvidia_smi(binary: str = "nvidia-smi") -> Optional[GpuInfo]:
    """``nvidia-smi --query-gpu`` (desktop GPUs; absent on Jetson)."""
    out = _run([binary, "--query-gpu=name,compute_cap,driver_version", "--format=csv,noheader"])
    if out is None:  # old drivers lack compute_cap
        out = _run([binary, "--query-gpu=name,driver_version", "--format=csv,noheader"])
        if out is None:
            return None
        fields = [f.strip() for f in out.splitlines()[0].split(",")]
        fields.insert(1, NONE)
    else:
        fields = [f.strip() for f in out.splitlines()[0].split(",")]
    if len(fields) < 3:
        return None
    header = _run([binary]) or ""
    cuda = re.search(r"CUDA Version:\s*([0-9.]+)", header)
    return GpuInfo(
        name=fields[0],
        compute_capability=fields[1],
        cuda_version=cuda.group(1) if cuda else NONE,
        driver_version=fields[2],
        source="nvidia-smi",
    )


def probe_proc_driver(root: str = "/proc/driver/nvidia") -> Optional[GpuInfo]:
    """The kernel driver's view: GPU model and driver version, no compute capability."""
    infos = sorted(glob.glob(os.path.join(root, "gpus", "*", "information")))
    if not infos:
        return None
    name = NONE
    try:
        with open(infos[0]) as f:
            for line in f:
                if line.startswith("Model:"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        return None
    driver = NONE
    try:
        with open(os.path.join(root, "version")) as f:
            match = re.search(r"Kernel Module\s+([0-9.]+)", f.read())
            driver = match.group(1) if match else NONE
    except OSError:
        pass
    return GpuInfo(name=name, driver_version=driver, source="/proc/driver/nvidia")


def probe_tegra(device_tree: str = "/proc/device-tree") -> Optional[GpuInfo]:
    """Jetson: the SoC from the device tree's ``compatible`` list."""
    try:
        with open(os.path.join(device_tree, "compatible"), "rb") as f:
            compatible = f.read().decode("ascii", "replace").split("\0")
    except OSError:
        return None
    for entry in compatible:
        soc = entry.split(",")[-1]
        if soc in TEGRA_GPUS:
            name, cc = TEGRA_GPUS[soc]
            return GpuInfo(name=name, compute_capability=cc, source="device-tree")
    return None


def _run(argv: Any) -> Optional[str]:
    try:
        out = subprocess.check_output(
            argv, stderr=subprocess.DEVNULL, timeout=NVIDIA_SMI_TIMEOUT_S, universal_newlines=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.strip() or None
