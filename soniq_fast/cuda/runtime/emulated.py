"""The emulated runtime: kernels compiled against cuda_emu.h, arrays stay in NumPy."""

from __future__ import annotations

import numpy as np

from ..emu import SCHEDULES, EmuModule
from ..kernel_files import KERNEL_DIR, kernel_file


class EmulatedRuntime:
    """Runs kernels on the CPU emulation runtime under one thread schedule.

    ``compute_capability`` is the device the emulation stands in for (default
    80, so the tensor-core path runs through its CPU model); each .cu file is
    compiled once per process and cached on disk.
    """

    name = "emulated"

    def __init__(self, schedule: str = "forward", seed: int = 0, compute_capability: int = 80):
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
        self.schedule = schedule
        self.seed = seed
        self.compute_capability = compute_capability
        self._modules: dict[str, EmuModule] = {}

    def function(self, name: str):
        path = kernel_file(name)
        if path.name not in self._modules:
            self._modules[path.name] = EmuModule(code=path.read_text(),
                                                 options=("-I", str(KERNEL_DIR)),
                                                 schedule=self.schedule, seed=self.seed)
        return self._modules[path.name].get_function(name)

    def to_device(self, array: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(array)

    def constant(self, array: np.ndarray) -> np.ndarray:
        """A small never-written array as the kernels see it (no copy needed on the CPU)."""
        return np.ascontiguousarray(array)

    def empty(self, shape, dtype) -> np.ndarray:
        return np.empty(shape, dtype)

    def to_host(self, array) -> np.ndarray:
        return np.asarray(array)
