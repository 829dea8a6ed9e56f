"""How long OpenBLAS's idle threads busy-wait: set before NumPy loads OpenBLAS.

After a matrix product, OpenBLAS keeps its threads spinning for about 2^28 CPU
cycles (a tenth of a second) in case another product follows. A training step is a
few products with other NumPy work between them, which :mod:`soniq_ref.parallel`
runs on worker threads: spinning BLAS threads would take the cores those workers
need (measured on a 2-core machine: two threads ran an epoch *slower* than one).
``OPENBLAS_THREAD_TIMEOUT=16`` (2^16 cycles, tens of microseconds) lets them sleep
instead. OpenBLAS reads it once, when it is loaded, so this module sets it when
``soniq_ref`` is imported before NumPy (``soniq`` commands are); a value already in
the environment is kept. It changes only waiting, never a result.
"""

import os

THREAD_TIMEOUT = "16"     # log2 of the CPU cycles an idle OpenBLAS thread spins

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", THREAD_TIMEOUT)
