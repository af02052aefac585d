"""Kernel-tier fixtures: a fresh lab per test, removed whatever happens."""
import pytest

from edgestick.lab import Lab


@pytest.fixture
def lab():
    lab = Lab.create()
    try:
        yield lab
    finally:
        lab.destroy()
