"""Applications over ``TaylorPolynomial``: function discovery, fast surrogates, feature attribution, convergence.

    from hope_engine.analysis import discover, surrogate, attribution, convergence
"""

from .attribution import DeletionCurve, attribution, deletion_curve, random_scores
from .convergence import Convergence, RadiusEstimate, convergence, derivative_ratios, estimate_radius
from .data import load_digits, load_mnist, read_idx
from .discovery import Discovery, TermStats, discover, local_formula
from .figures import convergence_figure, deletion_figure, discovery_figure, heatmap_figure
from .surrogate import Surrogate, surrogate

__all__ = [
    "Convergence", "DeletionCurve", "Discovery", "RadiusEstimate", "Surrogate", "TermStats", "attribution",
    "convergence", "convergence_figure", "deletion_curve", "deletion_figure", "derivative_ratios", "discover",
    "discovery_figure", "estimate_radius", "heatmap_figure", "load_digits", "load_mnist", "local_formula",
    "random_scores", "read_idx", "surrogate",
]
