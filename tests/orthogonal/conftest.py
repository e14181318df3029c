import os
import sys

import pytest
import torch

# the helpers shared with tests/ (states.py: the flat state of a carrying layer), also when this
# directory runs alone
sys.path.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(autouse=True)
def _single_thread():
    """Tiny matrices: one thread is faster, and immune to a busy shared CPU (thread-pool waits)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
