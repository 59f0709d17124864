"""Helpers the tests share (conftest.py holds only pytest fixtures and hooks).

``support.autograd``: the nested float64 autograd reference every exactness test compares against.
``support.indices``: multi-indices and their factorials.
``support.models``: what expanding must not change in a model (snapshots).
``support.analysis``: checks of the analysis figures.

The tests import them as ``from support.autograd import ...``: pytest puts ``tests/`` on ``sys.path`` (rootdir-less
test files, default import mode), whether it runs ``pytest tests`` or one file.
"""
