"""Diffusion tests: keep OpenBLAS single-threaded.

The kernels and grids call LAPACK on tiny (2x2 to 8x8) matrices many times; with OpenBLAS
threads on a loaded machine each call can take milliseconds instead of microseconds.
"""

import pytest

try:
    from threadpoolctl import threadpool_limits
except ImportError:  # pragma: no cover - threadpoolctl ships with scikit-learn
    threadpool_limits = None


@pytest.fixture(scope="session", autouse=True)
def _single_threaded_blas():
    if threadpool_limits is None:
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield
