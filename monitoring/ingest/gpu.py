"""NVIDIA GPUs through NVML (``nvidia-ml-py``), named as NVIDIA's dcgm-exporter names them.

``NvmlGpus.open()`` is False, and ``read()`` returns nothing, when the library, the
driver or a GPU is missing: the collector simply has no GPU series. A field a device
does not support is left out; any other NVML error drops that device's reading for
this interval and is counted.
"""

from __future__ import annotations

import contextlib
import importlib
from typing import Any

from monitoring.ingest.outlet import Point
from monitoring.log import get_logger

log = get_logger("ingest.gpu")

MAX_GPUS = 64


class NvmlGpus:
    """GPU gauges per device: labels ``gpu`` (index), ``UUID``, ``modelName``."""

    def __init__(self, nvml: Any = None) -> None:
        self._nvml = nvml
        self.available = False
        self.reason = ""
        self.errors = 0

    def open(self) -> bool:
        """Load and initialise NVML; False (with ``reason``) when there is no GPU to read."""
        try:
            nvml = self._nvml or importlib.import_module("pynvml")
        except ImportError as e:
            self.reason = f"nvidia-ml-py not importable: {e}"
            return False
        try:
            nvml.nvmlInit()
            count = nvml.nvmlDeviceGetCount()
        except Exception as e:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
            self.reason = f"NVML unavailable: {e}"
            return False
        if count < 1:
            self.reason = "no GPU"
            self._shutdown(nvml)
            return False
        self._nvml = nvml
        self.available = True
        return True

    def close(self) -> None:
        if self.available:
            self.available = False
            self._shutdown(self._nvml)

    @staticmethod
    def _shutdown(nvml: Any) -> None:
        with contextlib.suppress(Exception):
            nvml.nvmlShutdown()

    def read(self) -> list[Point]:
        """Current gauges of every GPU (empty when NVML is not available)."""
        if not self.available:
            return []
        nvml = self._nvml
        out: list[Point] = []
        try:
            count = min(nvml.nvmlDeviceGetCount(), MAX_GPUS)
        except Exception as e:
            self._error(e)
            return []
        for i in range(count):
            try:
                out += self._device(nvml, i)
            except Exception as e:
                self._error(e)
        return out

    def _device(self, nvml: Any, i: int) -> list[Point]:
        h = nvml.nvmlDeviceGetHandleByIndex(i)
        labels = {
            "gpu": str(i),
            "UUID": _text(nvml.nvmlDeviceGetUUID(h)),
            "modelName": _text(nvml.nvmlDeviceGetName(h)),
        }
        out: list[Point] = []

        def add(name: str, read: Any) -> None:
            try:
                value = read()
            except nvml.NVMLError_NotSupported:
                return
            out.append(Point(name, labels, "GAUGE", float(value)))

        util = _maybe(nvml, lambda: nvml.nvmlDeviceGetUtilizationRates(h))
        if util is not None:
            out.append(Point("DCGM_FI_DEV_GPU_UTIL", labels, "GAUGE", float(util.gpu)))
            out.append(Point("DCGM_FI_DEV_MEM_COPY_UTIL", labels, "GAUGE", float(util.memory)))
        mem = _maybe(nvml, lambda: nvml.nvmlDeviceGetMemoryInfo(h))
        if mem is not None:  # dcgm-exporter reports frame buffer in MiB
            out.append(Point("DCGM_FI_DEV_FB_USED", labels, "GAUGE", mem.used / 2**20))
            out.append(Point("DCGM_FI_DEV_FB_FREE", labels, "GAUGE", mem.free / 2**20))
        add("DCGM_FI_DEV_GPU_TEMP", lambda: nvml.nvmlDeviceGetTemperature(h, 0))  # GPU sensor
        add("DCGM_FI_DEV_POWER_USAGE", lambda: nvml.nvmlDeviceGetPowerUsage(h) / 1000.0)  # W
        add("DCGM_FI_DEV_SM_CLOCK", lambda: nvml.nvmlDeviceGetClockInfo(h, 1))  # MHz, SM
        return out

    def _error(self, e: Exception) -> None:
        self.errors += 1
        if self.errors == 1 or self.errors % 100 == 0:
            log.warning("NVML read failed", error=str(e), errors=self.errors)


def _maybe(nvml: Any, read: Any) -> Any:
    try:
        return read()
    except nvml.NVMLError_NotSupported:
        return None


def _text(v: Any) -> str:
    return v.decode(errors="replace") if isinstance(v, bytes) else str(v)
