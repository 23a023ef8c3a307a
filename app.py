"""CAM Explorer: placeholder until the app lands (see README)."""

import streamlit as st

st.set_page_config(page_title="CAM Explorer", layout="wide")
st.title("CAM Explorer")
st.info("The explorer app is being built; the backend `cam_core` is usable from Python.")
