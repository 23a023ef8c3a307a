"""CAM Explorer: the Streamlit entry point (`streamlit run app.py`).

Sets up the page, the model picker shared by all pages, and the navigation. The pages live in
`pages/`, each a thin script with a `render()` function; later pages are added to `PAGES`.
"""

from __future__ import annotations

import streamlit as st

from pages.ui import common

st.set_page_config(
    page_title="CAM Explorer", page_icon=":material/local_fire_department:", layout="wide"
)

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
common.model_picker()
navigation.run()
