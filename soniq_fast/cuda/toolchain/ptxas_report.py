"""Reading ptxas's verbose report (``-Xptxas -v`` / ``--ptxas-options=-v``)."""

from __future__ import annotations

import re
from dataclasses import dataclass

_FUNCTION = re.compile(r"Compiling entry function '(\w+)'")
_SPILLS = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_REGISTERS = re.compile(r"Used (\d+) registers")


@dataclass(frozen=True)
class PtxasReport:
    """Per kernel: (registers, stack frame bytes, spill store bytes, spill load bytes)."""

    kernels: dict

    def spills(self) -> dict:
        """{kernel: (store bytes, load bytes)} for the kernels that spill registers."""
        return {k: (v[2], v[3]) for k, v in self.kernels.items() if v[2] or v[3]}


def parse_ptxas_report(log: str) -> PtxasReport:
    kernels, current, frame = {}, None, None
    for line in log.splitlines():
        if m := _FUNCTION.search(line):
            current = m.group(1)
        elif (m := _SPILLS.search(line)) and current:
            frame = tuple(int(g) for g in m.groups())
        elif (m := _REGISTERS.search(line)) and current and frame:
            kernels[current] = (int(m.group(1)),) + frame
            current = frame = None
    return PtxasReport(kernels)
