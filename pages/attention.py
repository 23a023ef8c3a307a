"""Attention page: where a clicked position attends in every key modality; rollout for ViTs."""

from pages.ui import attention

attention.render()
