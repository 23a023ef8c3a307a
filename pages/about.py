"""About page: what CAM Explorer does, and how to explore your own model."""

from pages.ui import about

about.render()
