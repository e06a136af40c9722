"""Analyses: forgetting (Kendall tau of behaviour-target distances) and embedding collapse (spectra)."""

from .collapse import singular_spectrum, spectra_report
from .forgetting import behaviour_target_pairs, distance_tau, kendall_tau, pair_distances

__all__ = ["singular_spectrum", "spectra_report", "behaviour_target_pairs", "distance_tau", "kendall_tau",
           "pair_distances"]
