"""``cpu`` backend: bit-serial popcount and int8 kernels in C, called with the GIL released.

``BACKEND`` uses the best code path of this CPU (or ``SONIQ_CPU_ISA``) and as many
threads as the process may use (or ``SONIQ_NUM_THREADS``). Build the compiled part
with ``pip install -e .``.
"""

try:
    from . import _kernels  # noqa: F401
except ImportError as exc:   # pragma: no cover - depends on the build
    raise ImportError("the compiled extension soniq_fast.cpu._kernels is missing "
                      f"({exc}); build it with: pip install -e .") from exc

from .backend import CpuBackend, CpuKernels, engine_calls
from . import isa
from .isa import ISA_NAMES, best_isa
from .packed import CpuPackedWeights

BACKEND = CpuBackend()

__all__ = ["BACKEND", "CpuBackend", "CpuKernels", "CpuPackedWeights", "ISA_NAMES", "best_isa", "engine_calls"]
