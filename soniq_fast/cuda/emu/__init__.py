"""CPU emulation runtime for SONIQ's CUDA kernels.

:class:`EmuModule` mirrors ``cupy.RawModule``: ``EmuModule(code=..., options=('-I', dir))``,
then ``module.get_function(name)(grid, block, args)``. The unmodified kernel source is
compiled once with the system C++ compiler against ``cuda_emu.h`` (cached by content hash
under the user cache directory) and each launch runs every CUDA thread as a fiber.
"""

from .module import SCHEDULES, EmuFunction, EmuLaunchError, EmuModule

__all__ = ["EmuModule", "EmuFunction", "EmuLaunchError", "SCHEDULES"]
