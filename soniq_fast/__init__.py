"""soniq_fast -- fast backends implementing the soniq_ref kernel contract bit for bit.

``soniq_fast.cpu``: C kernels (bit-serial popcount and INT8 paths) behind Cython.
``soniq_fast.cuda``: CUDA kernels, runnable on a GPU through CuPy or on the CPU
emulation runtime. Use them through ``soniq_ref.get_backend(name)``.
"""
