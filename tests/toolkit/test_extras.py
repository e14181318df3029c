"""The core works without the toolkit's dependencies; the command then says what to install."""

from __future__ import annotations

import subprocess
import sys

import pytest
from toolkit_helpers import cli_env

BLOCK = """
import sys
BLOCKED = ("lightning", "pytorch_lightning", "lightning_fabric", "yaml", "matplotlib", "tensorboard", "tqdm")
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, Block())
"""


@pytest.mark.subprocess
def test_core_imports_without_the_train_extra_and_the_command_explains(tmp_path):
    code = (
        BLOCK
        + """
import momentumrnn, torch
layer = momentumrnn.layer_class("MomentumLSTM")(1, 4, batch_first=True)
out, _ = layer(torch.zeros(2, 3, 1))
assert out.shape == (2, 3, 4)
assert not any(m.split(".")[0] in BLOCKED for m in sys.modules), [m for m in sys.modules if m.split(".")[0] in BLOCKED]
from momentumrnn.__main__ import main
sys.exit(main(["train", "--epochs", "1"]))
"""
    )
    r = subprocess.run(
        [sys.executable, "-c", code], env=cli_env(), cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().startswith("error: ") and "pip install 'momentumrnn[train]'" in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
