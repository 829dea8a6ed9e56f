"""Build script: the pure-Python packages plus the compiled extensions of soniq_fast.

Compiled code is portable: no host-specific -march flag; ISA-specific kernels carry their own
target attributes and are chosen at run time. Floating point is compiled with
-ffp-contract=off so no multiply-add is fused (the reference rounds every step).

The compiled backend is optional: without a working C compiler the build prints a
warning and installs the pure-Python packages (the reference needs no compiler);
``get_backend("cpu")`` then says how to build it. SONIQ_REQUIRE_CPU_BACKEND=1 makes
a failed build an error instead.

SONIQ_CPU_SANITIZE=1 builds the cpu extension with AddressSanitizer and
UndefinedBehaviorSanitizer (used by .ci/sanitize.sh; implies a required build).
"""

import os
import sys
from glob import glob

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

WARNING = """
WARNING: the cpu backend's C extension (soniq_fast.cpu._kernels) was not built:
  {error}
SONIQ is installed without it: the reference (backend "ref") works as usual. To build
it, install a C compiler and the Python headers (Debian/Ubuntu: apt-get install
build-essential python3-dev), then run pip install -e . again.
"""


class OptionalBuildExt(build_ext):
    """Build the extensions if the machine can; otherwise warn and install without them."""

    def _required(self) -> bool:
        return "1" in (os.environ.get("SONIQ_REQUIRE_CPU_BACKEND"),
                       os.environ.get("SONIQ_CPU_SANITIZE"))

    def run(self):
        try:
            super().run()
        except Exception as exc:     # no compiler at all (DistutilsPlatformError, ...)
            self._skip(exc)

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:     # the compiler or linker failed
            self._skip(exc)

    def _skip(self, exc: Exception) -> None:
        if self._required():
            raise exc
        sys.stderr.write(WARNING.format(error=f"{type(exc).__name__}: {exc}"))


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
        # the C records and the Cython ones (_kernels.pxd) the glue is built against
        depends=sorted(glob("soniq_fast/cpu/core/*.h")) + ["soniq_fast/cpu/_kernels.pxd"],
        extra_compile_args=cflags,
        extra_link_args=ldflags,
    )


def ext_modules():
    from Cython.Build import cythonize
    return cythonize([cpu_extension()], language_level=3, quiet=True)


setup(ext_modules=ext_modules(), cmdclass={"build_ext": OptionalBuildExt})
