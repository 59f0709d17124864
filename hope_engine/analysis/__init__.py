"""Applications over ``TaylorPolynomial``: function discovery, fast surrogates, feature attribution and interactions,
convergence.

    from hope_engine.analysis import discover, surrogate, attribution, interactions, decompose, convergence
"""

from hope_engine.analysis.attribution import METHODS, attribution
from hope_engine.analysis.convergence import (
    Convergence,
    RadiusEstimate,
    convergence,
    derivative_ratios,
    estimate_radius,
)
from hope_engine.analysis.data import load_digits, load_images, load_mnist, load_png_folder, read_idx
from hope_engine.analysis.deletion import DeletionCurve, deletion_curve, insertion_curve, random_scores
from hope_engine.analysis.discovery import Discovery, TermStats, discover, local_formula
from hope_engine.analysis.figures import (
    convergence_figure,
    deletion_figure,
    discovery_figure,
    heatmap_figure,
    interaction_figure,
)
from hope_engine.analysis.interactions import Decomposition, InteractionMap, Pair, decompose, interactions
from hope_engine.analysis.robustness import MarginCertificate, verified_accuracy, verify_margin
from hope_engine.analysis.surrogate import Surrogate, surrogate

__all__ = [
    "METHODS", "Convergence", "Decomposition", "DeletionCurve", "Discovery", "InteractionMap", "MarginCertificate",
    "Pair",
    "RadiusEstimate", "Surrogate", "TermStats", "attribution", "convergence", "convergence_figure", "decompose",
    "deletion_curve", "deletion_figure", "derivative_ratios", "discover", "discovery_figure", "estimate_radius",
    "heatmap_figure", "insertion_curve", "interaction_figure", "interactions", "load_digits", "load_images",
    "load_mnist", "load_png_folder", "local_formula", "random_scores", "read_idx", "surrogate",
    "verified_accuracy", "verify_margin",
]
