"""torch's CPU kernels kept on the calling thread while a worker thread uses them."""

from __future__ import annotations

import numpy as np
import pytest

from featstore.common import torch_threads
from featstore.common.torch_threads import torch_serial
from featstore.store.blocks import assemble_block


def test_torch_runs_serial_inside_the_kernel_and_the_thread_count_is_put_back():
    torch = pytest.importorskip("torch")
    if torch_threads._torch_openmp(torch) is None:
        pytest.skip("this torch build has no bundled libgomp")
    before = torch.get_num_threads()
    seen = {}

    def in_thread():
        with torch_serial(torch):
            seen["inside"] = torch.get_num_threads()
        seen["after"] = torch.get_num_threads()
        parts = [np.ones((5, 3), np.float16), np.ones((5, 2), np.float16)]
        assemble_block(parts, np.arange(5), 0, combined=True, extra=False, what="x")
        seen["after kernel"] = torch.get_num_threads()

    import threading

    t = threading.Thread(target=in_thread)
    t.start()
    t.join()
    assert seen == {"inside": 1, "after": before, "after kernel": before}
    assert torch.get_num_threads() == before  # the main thread's setting is its own
