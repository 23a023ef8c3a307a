"""Compare page: a layer x method grid of heatmaps, each map with its faithfulness score."""

from pages.ui import compare

compare.render()
