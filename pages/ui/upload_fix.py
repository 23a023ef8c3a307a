"""A fix for Streamlit losing uploads while a script run starts (issue 12, item 4).

Cause (Streamlit 1.67, ``runtime/forward_msg_queue.py``): a file dropped on an uploader first
asks the server for upload URLs (``FileURLsRequest``); the answer, a ``file_urls_response``
message, waits in the session's outgoing queue until the next flush.  When a script run starts
(``SCRIPT_STARTED``, e.g. the rerun of the previous upload), the session clears that queue,
keeping only lifecycle messages, and the answer is dropped: the browser waits forever, the file
is never sent, its uploader stays empty ("No image for modality ...").  The busier the server
(several sessions uploading at once), the longer answers wait, the more are lost.  The
uploader's own answer is not part of any script run, so it is kept here across that clear.
"""

from __future__ import annotations

from streamlit.runtime.forward_msg_queue import ForwardMsgQueue

__all__ = ["KEPT_MESSAGES", "install"]

#: ForwardMsg types that answer a browser request, not a script run: never cleared.
KEPT_MESSAGES = frozenset({"file_urls_response"})


def install() -> None:
    """Patch ``ForwardMsgQueue.clear`` once per process (idempotent)."""
    if getattr(ForwardMsgQueue.clear, "_keeps_answers", False):
        return
    original = ForwardMsgQueue.clear

    def clear(self, retain_lifecycle_msgs=False, fragment_ids_this_run=None):
        answers = (
            [m for m in self._queue if m.WhichOneof("type") in KEPT_MESSAGES]
            if retain_lifecycle_msgs
            else []
        )
        original(self, retain_lifecycle_msgs, fragment_ids_this_run)
        kept = {id(m) for m in self._queue}
        self._queue.extend(m for m in answers if id(m) not in kept)

    clear._keeps_answers = True
    ForwardMsgQueue.clear = clear
