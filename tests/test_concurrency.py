"""Many Python threads calling one backend at once get exactly the single-threaded results.

Fast backends release the GIL around their kernels, so calls really overlap; any
shared scratch buffer or global state would show up here as a wrong answer.
"""

from concurrent.futures import ThreadPoolExecutor

import numpy as np

N_THREADS = 8


def _cases(n):
    rng = np.random.default_rng(1234)
    cases = []
    for i in range(n):
        m, k, o = 17 + i, 150 + 13 * i, 9 + i
        a_bits = rng.integers(1, 5, k).astype(np.uint8)
        w_bits = rng.integers(1, 9, o).astype(np.uint8)
        a = (rng.random((m, k)) * (2.0 ** a_bits)).astype(np.uint8)
        w = (rng.random((o, k)) * (2.0 ** w_bits[:, None])).astype(np.uint8)
        x = (rng.random((2, 5, 9, 7)) * 4).astype(np.uint8)
        wc = (rng.random((o, 5, 3, 3)) * 2).astype(np.uint8)
        cases.append((a, a_bits, w, w_bits, x, wc))
    return cases


def _run(backend, case):
    a, a_bits, w, w_bits, x, wc = case
    lin = backend.linear_int(a, a_bits, w, w_bits, 4)
    conv = backend.conv2d_int(x, np.full(5, 2, np.uint8), wc, np.ones(len(w_bits), np.uint8), 2,
                              stride=2, padding=1)
    codes = backend.requantize(lin, np.full(lin.shape[1], 0.01, np.float32),
                               np.zeros(lin.shape[1], np.float32),
                               np.full(lin.shape[1], 4, np.uint8),
                               np.ones(lin.shape[1], np.float32))
    return lin, conv, codes


def test_threads_get_the_single_threaded_results(backend):
    cases = _cases(N_THREADS) * 3
    serial = [_run(backend, c) for c in cases]
    with ThreadPoolExecutor(N_THREADS) as pool:
        threaded = list(pool.map(lambda c: _run(backend, c), cases))
    for want, got in zip(serial, threaded):
        for w, g in zip(want, got):
            np.testing.assert_array_equal(np.asarray(g), w)
