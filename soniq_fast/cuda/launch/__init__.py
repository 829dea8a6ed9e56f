"""Launchers: the contract's operations as kernel launches on a runtime.

Written once against the runtime interface (soniq_fast.cuda.runtime), used by
both the emulated and the GPU backend. Arguments arrive validated.
"""
