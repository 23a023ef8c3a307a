"""CAM Explorer: the Streamlit entry point (`streamlit run app.py`).

Sets up the page, the model picker shared by all pages, and the navigation. The pages live in
`pages/`, each a thin script with a `render()` function; later pages are added to `PAGES`.
"""

from __future__ import annotations

import streamlit as st

from pages import common

st.set_page_config(
    page_title="CAM Explorer", page_icon=":material/local_fire_department:", layout="wide"
)

PAGES = [
    st.Page(
        "pages/explorer.py", title="Explorer", icon=":material/local_fire_department:", default=True
    ),
    st.Page("pages/about.py", title="About / use your own model", icon=":material/menu_book:"),
]

navigation = st.navigation(PAGES)
common.model_picker()
navigation.run()
