"""Analyses: forgetting (Kendall tau of behaviour-target distances) and embedding collapse (spectra).

This package reads artefacts only (through mmesid.artifacts); it imports no stage package.
"""

from .collapse import singular_spectrum, spectra_report
from .forgetting import behaviour_target_pairs, distance_tau, export_forgetting, kendall_tau, pair_distances

__all__ = ["singular_spectrum", "spectra_report", "behaviour_target_pairs", "distance_tau", "export_forgetting",
           "kendall_tau", "pair_distances"]
