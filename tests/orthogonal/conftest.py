import pytest
import torch


@pytest.fixture(autouse=True)
def _single_thread():
    """Tiny matrices: one thread is faster, and immune to a busy shared CPU (thread-pool waits)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
