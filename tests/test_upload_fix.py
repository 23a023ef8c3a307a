"""Streamlit drops a pending upload-URL answer when a script run starts; the app keeps it.

Issue 12 item 4 (RELIABILITY row 22): under load, a file dropped on an uploader while the
previous upload's rerun was starting was never sent (its `file_urls_response` was cleared from
the session's outgoing queue), and the uploader stayed empty.  The browser load test
(`test_browser_load.py`) checks the whole app; this checks the mechanism.
"""

from __future__ import annotations

from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from streamlit.runtime.forward_msg_queue import ForwardMsgQueue

from pages.ui import upload_fix


def _urls_answer(request_id: str) -> ForwardMsg:
    msg = ForwardMsg()
    msg.file_urls_response.response_id = request_id
    msg.file_urls_response.file_urls.add(file_id="f1", upload_url="/u/f1", delete_url="/d/f1")
    return msg


def _delta(text: str) -> ForwardMsg:
    msg = ForwardMsg()
    msg.metadata.delta_path[:] = [0, 0]
    msg.delta.new_element.markdown.body = text
    return msg


def test_script_start_keeps_the_answer_to_an_upload_request():
    upload_fix.install()
    upload_fix.install()  # idempotent: one wrapper, not two
    queue = ForwardMsgQueue()
    queue.enqueue(_delta("old run"))
    queue.enqueue(_urls_answer("req-7"))
    queue.clear(retain_lifecycle_msgs=True)  # what SCRIPT_STARTED does
    kinds = [m.WhichOneof("type") for m in queue.flush()]
    assert kinds == ["file_urls_response"]  # the old run's delta goes, the answer stays


def test_full_clear_still_empties_the_queue():
    upload_fix.install()
    queue = ForwardMsgQueue()
    queue.enqueue(_urls_answer("req-8"))
    queue.clear(retain_lifecycle_msgs=False)  # a new session: nothing is waiting for it
    assert queue.is_empty()
