"""Figures, tables and an HTML page from stored results: a thin layer over the library.

Rendering only: every number drawn or written comes from an :class:`~advlab.attacks.AttackResult`
or an :class:`~advlab.evaluation.Evaluation` (or is passed in); nothing is recomputed. Figures
are bare matplotlib ``Figure`` objects on an Agg canvas, so no global ``pyplot`` state is touched.
Nothing in the library imports this package. Signals ``(B, C, T)`` get curves per channel
(:func:`signal_gallery`) and tables ``(B, D)`` a table of changed features
(:func:`changed_features_table`) in place of the image gallery.

>>> from advlab.reports import accuracy_curve, gallery_from_result, write_report, write_table
>>> accuracy_curve(ev, path="report/robust_accuracy.png")
>>> gallery_from_result(x, result, class_names=names, clean_pred=p, clean_conf=c,
...                     path="report/gallery.png")
>>> write_table(ev, "report/robust_accuracy.md", "report/rows.csv")
>>> write_report("report", evaluation=ev, figures=["report/robust_accuracy.png",
...              "report/gallery.png"], title="SmallCNN on digits")
"""

from __future__ import annotations

from advlab.reports.bounds import bound_cdf_figure
from advlab.reports.curve import accuracy_curve
from advlab.reports.fooling import fooling_gallery
from advlab.reports.gallery import gallery, gallery_from_result
from advlab.reports.geometry import cosine_figure, decision_map_figure, decision_maps_figure, subspace_dim_figure
from advlab.reports.minimal import minimal_norms_figure
from advlab.reports.page import write_report
from advlab.reports.policy import policy_return_figure
from advlab.reports.signals import signal_gallery, signal_gallery_from_result
from advlab.reports.table import write_table
from advlab.reports.tabular import changed_features_from_result, changed_features_table
from advlab.reports.transfer import transfer_heatmap

__all__ = ["accuracy_curve", "bound_cdf_figure", "changed_features_from_result", "changed_features_table",
           "cosine_figure", "decision_map_figure", "decision_maps_figure",
           "fooling_gallery", "gallery",
           "gallery_from_result", "minimal_norms_figure", "policy_return_figure", "signal_gallery",
           "signal_gallery_from_result", "subspace_dim_figure", "transfer_heatmap", "write_report", "write_table"]
