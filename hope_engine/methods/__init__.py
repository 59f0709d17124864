"""Expansion methods beside the exact one: the paper's rule, receptive-field windows, the autograd baselines."""
