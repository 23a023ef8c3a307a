"""CAM Explorer: the Streamlit entry point (`streamlit run app.py`).

Sets up the page, the model picker shared by all pages, and the navigation. The pages live in
`pages/`, each a thin script with a `render()` function; later pages are added to `PAGES`.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from pages.ui import common

# The tab's icon is a file of ours: a ":material/..." page icon makes the browser fetch it from
# fonts.gstatic.com on every load, and the app serves nothing from outside (the sidebar's
# Material icons come with Streamlit's own font).
ICON = Path(__file__).parent / "pages" / "ui" / "icon.png"
st.set_page_config(page_title="CAM Explorer", page_icon=str(ICON), layout="wide")

# Each url_path differs from its file's name on purpose: because a `pages/` folder exists,
# Streamlit runs a process's first script run (and every AppTest run) in its legacy
# "pages folder" mode, where a URL that names a file in pages/ would run that file alone,
# without this entry point (no model picker). Distinct url paths make those runs fall through
# to this file, whose st.navigation then takes over.
PAGES = [
    st.Page(
        "pages/explorer.py",
        title="Explorer",
        icon=":material/local_fire_department:",
        url_path="explore",
        default=True,
    ),
    st.Page(
        "pages/attention.py",
        title="Attention",
        icon=":material/visibility:",
        url_path="attend",
    ),
    st.Page(
        "pages/compare.py",
        title="Compare layers and methods",
        icon=":material/grid_view:",
        url_path="which-map-to-trust",
    ),
    st.Page(
        "pages/about.py",
        title="About / use your own model",
        icon=":material/menu_book:",
        url_path="use-your-own-model",
    ),
]

navigation = st.navigation(PAGES)
common.page_style()
common.model_picker()
common.track_page(navigation.url_path)
navigation.run()
