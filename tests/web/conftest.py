"""Fixtures of the browser tests: one headless Chromium page per session."""

from __future__ import annotations

import pytest

from kernelforge import _config
from kernelforge.testing import chromium


@pytest.fixture(scope="session")
def browser_page():
    """A page of headless Debian Chromium with WebGPU and WebGL2 (fails under KF_REQUIRE_DEVICE=1 if absent)."""
    reason = chromium.available()
    if reason:
        if _config.require_device():
            pytest.fail(f"KF_REQUIRE_DEVICE=1 but {reason}")
        pytest.skip(reason)
    with chromium.page() as page:
        yield page
