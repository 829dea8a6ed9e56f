"""Build script: the pure-Python packages plus the compiled extensions of soniq_fast.

Compiled code is portable: no host-specific -march flag; ISA-specific kernels carry their own
target attributes and are chosen at run time. Floating point is compiled with
-ffp-contract=off so no multiply-add is fused (the reference rounds every step).

SONIQ_CPU_SANITIZE=1 builds the cpu extension with AddressSanitizer and
UndefinedBehaviorSanitizer (used by .ci/sanitize.sh).
"""

import os
from glob import glob

from setuptools import Extension, setup


def cpu_extension() -> Extension:
    cflags = ["-O3", "-std=c11", "-ffp-contract=off", "-fno-strict-aliasing", "-pthread"]
    ldflags = ["-pthread"]
    if os.environ.get("SONIQ_CPU_SANITIZE") == "1":
        sanitize = ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined",
                    "-fno-omit-frame-pointer", "-g"]
        cflags = [f for f in cflags if f != "-O3"] + ["-O1"] + sanitize
        ldflags += sanitize
    return Extension(
        "soniq_fast.cpu._kernels",
        sources=["soniq_fast/cpu/_kernels.pyx"] + sorted(glob("soniq_fast/cpu/core/*.c")),
        include_dirs=["soniq_fast/cpu"],
        depends=sorted(glob("soniq_fast/cpu/core/*.h")),
        extra_compile_args=cflags,
        extra_link_args=ldflags,
    )


def ext_modules():
    from Cython.Build import cythonize
    return cythonize([cpu_extension()], language_level=3, quiet=True)


setup(ext_modules=ext_modules())
