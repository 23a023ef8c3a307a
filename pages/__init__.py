"""Pages of the CAM Explorer app (run through `st.navigation` in app.py)."""
