"""Fixtures for the network tests."""

from __future__ import annotations

import warnings

import pytest
import torch


def _script(module: torch.nn.Module) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return torch.jit.script(module)


@pytest.fixture
def jit_script():
    """``torch.jit.script`` (what ``monai.bundle ckpt_export`` uses) without its deprecation warning."""
    return _script


@pytest.fixture(autouse=True)
def _no_jit_profiling():
    """Run scripted modules without the profiling executor's warm-up optimisation (slow on CPU)."""
    with torch.jit.optimized_execution(False):
        yield
