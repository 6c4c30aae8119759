"""The HTML report: ``ReportInputs`` (what the page shows, as data), ``render`` (the page),
``visuals`` (samples, neighbours, projections, thumbnails) and ``svg`` (the charts)."""

from evaluation.report.inputs import ExampleUser, Gallery, ItemCard, ItemMap, Ranking, ReportInputs
from evaluation.report.page import render

__all__ = ["ExampleUser", "Gallery", "ItemCard", "ItemMap", "Ranking", "ReportInputs", "render"]
