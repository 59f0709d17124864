"""Applications over ``TaylorPolynomial``: function discovery, fast surrogates, feature attribution and interactions,
convergence.

    from hope_engine.analysis import discover, surrogate, attribution, interactions, decompose, convergence
"""

from .attribution import METHODS, attribution
from .convergence import Convergence, RadiusEstimate, convergence, derivative_ratios, estimate_radius
from .data import load_digits, load_images, load_mnist, load_png_folder, read_idx
from .deletion import DeletionCurve, deletion_curve, insertion_curve, random_scores
from .discovery import Discovery, TermStats, discover, local_formula
from .figures import convergence_figure, deletion_figure, discovery_figure, heatmap_figure, interaction_figure
from .interactions import Decomposition, InteractionMap, Pair, decompose, interactions
from .surrogate import Surrogate, surrogate

__all__ = [
    "METHODS", "Convergence", "Decomposition", "DeletionCurve", "Discovery", "InteractionMap", "Pair",
    "RadiusEstimate", "Surrogate", "TermStats", "attribution", "convergence", "convergence_figure", "decompose",
    "deletion_curve", "deletion_figure", "derivative_ratios", "discover", "discovery_figure", "estimate_radius",
    "heatmap_figure", "insertion_curve", "interaction_figure", "interactions", "load_digits", "load_images",
    "load_mnist", "load_png_folder", "local_formula", "random_scores", "read_idx", "surrogate",
]
