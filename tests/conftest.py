"""Pytest set-up for the whole suite: the payload check switched on, and a seeded random state per test.

The helpers tests share (the nested-autograd reference, model snapshots, multi-indices, figure checks) live in
``tests/support/``; see its ``__init__``.
"""

from __future__ import annotations

import os

import pytest
import torch

# every panel payload is checked against hope_widgets/schema.py before it is sent (kernels started by tests too)
os.environ.setdefault("HOPE_CHECK_PAYLOADS", "1")


@pytest.fixture(autouse=True)
def _seeded():
    """Every test starts from the same random state, so failures reproduce."""
    torch.manual_seed(0)
    yield
