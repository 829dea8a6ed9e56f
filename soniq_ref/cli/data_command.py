"""``soniq data download NAME``: fetch a dataset into the cache (or ``--dir``)."""

from __future__ import annotations


def run_data(args) -> None:
    """Download (or find complete and checked) dataset ``args.name``; print its folder."""
    from ..data import download

    folder = download(args.name, args.dir)
    print(f"{args.name}: {folder}")
