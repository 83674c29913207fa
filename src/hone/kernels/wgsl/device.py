"""Finding the WebGPU adapter for hone's WGSL kernels, and one cached device shared by all of them.

wgpu-py (pip ``wgpu``, pinned in requirements.lock) drives wgpu-native, which asks
Vulkan, Metal, D3D12 or OpenGL for an adapter. On a machine without a GPU, Mesa's lavapipe
(Debian/Ubuntu ``mesa-vulkan-drivers``) gives a software Vulkan adapter that runs kernels on the
CPU; ``AdapterInfo.is_cpu`` says when that is what was found. Nothing here runs at import time:
wgpu is imported and the adapter requested on the first call of ``get_device``.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

from hone.errors import ProviderUnavailableError

logger = logging.getLogger(__name__)

INSTALL_HINT = (
    "run `make setup` (it installs wgpu-py) and, on a machine without a GPU, `make vulkan` "
    "(Debian's mesa-vulkan-drivers, a software Vulkan adapter)"
)


@dataclass(frozen=True)
class AdapterInfo:
    """What wgpu-native found: ``adapter_type`` is "DiscreteGPU", "IntegratedGPU", "CPU" or "Unknown"."""

    vendor: str
    device: str
    description: str
    adapter_type: str
    backend_type: str
    is_fallback_adapter: bool

    @property
    def is_cpu(self) -> bool:
        """True for a software adapter (lavapipe, llvmpipe, WARP): correct, but no GPU speed."""
        return self.adapter_type == "CPU" or self.is_fallback_adapter

    def summary(self) -> str:
        kind = "CPU/software" if self.is_cpu else "GPU"
        return f"{self.device} ({self.vendor}, {self.backend_type}, {self.adapter_type}: {kind})"


@dataclass(frozen=True)
class WgpuDevice:
    """The cached device, its adapter's description, and the wgpu module it came from."""

    device: Any
    info: AdapterInfo
    wgpu: Any


_lock = threading.Lock()
_cached: WgpuDevice | None = None


def _import_wgpu() -> Any:
    try:
        import wgpu
    except ImportError as exc:
        raise ProviderUnavailableError(
            f"WGSL kernels need wgpu-py, which is not installed: {INSTALL_HINT}"
        ) from exc
    return wgpu


def _adapter_info(adapter: Any) -> AdapterInfo:
    info = adapter.info
    return AdapterInfo(
        vendor=str(info.get("vendor", "")),
        device=str(info.get("device", "")),
        description=str(info.get("description", "")),
        adapter_type=str(info.get("adapter_type", "Unknown")),
        backend_type=str(info.get("backend_type", "Unknown")),
        is_fallback_adapter=bool(
            info.get("is_fallback_adapter", getattr(adapter, "is_fallback_adapter", False))
        ),
    )


def get_device() -> WgpuDevice:
    """The one WebGPU device hone's kernels share, requested (high-performance) on first use."""
    global _cached
    with _lock:
        if _cached is not None:
            return _cached
        wgpu = _import_wgpu()
        try:
            adapter = wgpu.gpu.request_adapter_sync(power_preference="high-performance")
        except Exception as exc:  # wgpu-native raises RuntimeError or GPUError subclasses
            raise ProviderUnavailableError(f"no WebGPU adapter was found ({exc}): {INSTALL_HINT}") from exc
        if adapter is None:
            raise ProviderUnavailableError(f"no WebGPU adapter was found: {INSTALL_HINT}")
        info = _adapter_info(adapter)
        try:
            device = adapter.request_device_sync()
        except Exception as exc:
            raise ProviderUnavailableError(
                f"the WebGPU adapter {info.summary()} refused to create a device: {exc}"
            ) from exc
        logger.info("WGSL kernels run on %s", info.summary())
        if info.is_cpu:
            logger.info("that adapter is software: results are correct, timings are not a GPU's")
        _cached = WgpuDevice(device=device, info=info, wgpu=wgpu)
        return _cached


def adapter_info() -> AdapterInfo:
    """The adapter the kernels run on (requesting it if that has not happened yet)."""
    return get_device().info
