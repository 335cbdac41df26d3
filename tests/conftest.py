"""Shared fixtures: the devices every engine test runs on."""
from __future__ import annotations

import pytest

import gradsolve as gs


def _available_devices():
    devices = [pytest.param("cpu", id="cpu")]
    try:
        import array_api_strict  # noqa: F401

        devices.append(pytest.param("array-api-strict", id="strict"))
    except ImportError:  # pragma: no cover - the test extras install it
        devices.append(pytest.param("array-api-strict", id="strict",
                                    marks=pytest.mark.skip(reason="array-api-strict is not installed")))
    if gs.cuda_available():  # pragma: no cover - needs a GPU
        devices.append(pytest.param("cuda", id="cuda"))
    else:
        devices.append(pytest.param("cuda", id="cuda",
                                    marks=pytest.mark.skip(reason="no CUDA device (CuPy with a GPU) on this machine")))
    return devices


DEVICES = _available_devices()


@pytest.fixture(params=DEVICES)
def device(request):
    """Each engine test runs on cpu (NumPy), the Array API strict backend, and cuda when present."""
    return request.param
