"""What the page scripts render: one module per page (``render()``), plus ``common``.

Kept out of ``pages/``'s top level so that only page scripts live there, and so that each page
script is a two-line file: Streamlit compiles page scripts on every run in tests (AppTest),
modules only once.
"""
