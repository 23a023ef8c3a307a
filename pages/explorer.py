"""Explorer page: inputs per modality, a layer, a method and target -> overlays side by side."""

from pages.ui import explorer

explorer.render()
