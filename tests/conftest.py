"""Shared fixtures: planted sparse-coding problems on several dictionary geometries."""

from __future__ import annotations

import numpy as np
import pytest
import torch

torch.set_num_threads(2)


@pytest.fixture
def one_thread():
    """One torch thread for the test: on tiny matrices OpenMP hand-offs between 2 busy cores cost more than the
    work. A test file opts in with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def random_dict(rng: np.random.Generator, n: int, m: int) -> np.ndarray:
    D = rng.standard_normal((n, m))
    return D / np.linalg.norm(D, axis=0)


def spiked_dict(rng: np.random.Generator, n: int, m: int, rho: float) -> np.ndarray:
    v = rng.standard_normal(n)
    v /= np.linalg.norm(v)
    U = rng.standard_normal((n, m))
    U /= np.linalg.norm(U, axis=0)
    D = np.sqrt(1 - rho) * U + np.sqrt(rho) * v[:, None]
    return D / np.linalg.norm(D, axis=0)


def duplicated_dict(rng: np.random.Generator, n: int, m: int) -> np.ndarray:
    D = random_dict(rng, n, m)
    D[:, m // 2 :] = D[:, : m - m // 2]  # every atom of the second half copies one of the first
    return D


def planted(rng: np.random.Generator, D: np.ndarray, B: int, k: int, noise: float = 0.0) -> np.ndarray:
    n, m = D.shape
    Z = np.zeros((B, m))
    for i in range(B):
        Z[i, rng.choice(m, k, replace=False)] = rng.uniform(1, 3, k)
    return Z @ D.T + noise * rng.standard_normal((B, n))


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
