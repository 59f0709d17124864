"""Truncated Taylor series: bases and their tables, jets, univariate functions, kernels, polynomials, intervals."""
