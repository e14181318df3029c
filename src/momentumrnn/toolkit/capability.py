"""What this machine can run, checked before a run starts: bf16 recurrent kernels on the CPU, and
no more DDP processes than CPU cores.

bf16 on CPU: ``--precision bf16`` runs under ``torch.autocast("cpu", torch.bfloat16)``, where
the native RNN / LSTM / GRU kernels (oneDNN) need a bf16 primitive that older CPUs lack ("could
not create a primitive descriptor for the LSTM forward propagation primitive", from inside the
kernel, after the run has started). So the toolkit tries once per process a tiny forward and
backward of the host's native layer in bf16 (a few milliseconds) and refuses the run with one
clear line when it fails. No silent fallback to fp32: a run asked for bf16 and recorded as bf16
must have run in bf16. Orthogonal hosts (no oneDNN recurrent primitive) need no probe.
"""

from __future__ import annotations

import functools
import os

import torch
from torch import nn

import momentumrnn as core

from .errors import ToolkitError

_NATIVE = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


def cpu_count() -> int:
    """CPU cores this process may use (the affinity mask where the OS has one: containers)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def on_cpu(train_cfg: dict) -> bool:
    acc = train_cfg.get("accelerator", "auto")
    return acc == "cpu" or (
        acc == "auto"
        and not torch.cuda.is_available()
        and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    )


def check_devices(train_cfg: dict) -> None:
    """DDP on CPU runs one process per device: more processes than cores only thrash."""
    n = int(train_cfg["devices"])
    cores = cpu_count()
    if n > 1 and on_cpu(train_cfg) and n > cores:
        raise ToolkitError(
            f"--devices {n}: on CPU every device is one training process, and this machine has "
            f"{cores} CPU core(s); use --devices {cores} or fewer (or train on GPUs)"
        )


@functools.cache
def bf16_native_ok(host: str) -> tuple[bool, str]:
    """Can this CPU run the native ``host`` kernel (rnn, lstm, gru) forward and backward under
    bf16 autocast? ``(ok, first line of the failure)``, tried once per process."""
    cls = _NATIVE[host]
    layer = cls(4, 4, batch_first=True)
    x = torch.randn(2, 3, 4, requires_grad=True)
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out, _ = layer(x)
        out.float().sum().backward()
    except RuntimeError as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        return False, first[:200]
    return True, ""


def model_host(model_cfg: dict) -> str:
    """The host of a model config (its ``host`` key, or the host of its paper name or alias)."""
    if model_cfg.get("host"):
        return str(model_cfg["host"]).lower()
    name = str(model_cfg.get("name") or "")
    name = core.LAYER_ALIASES.get(name, name)
    info = core.LAYER_NAMES.get(name)
    return str(info[0]).lower() if info else ""


def check_bf16(train_cfg: dict, model_cfg: dict) -> None:
    """Refuse bf16 on a CPU whose oneDNN cannot run the model's native recurrent kernel in bf16."""
    if not on_cpu(train_cfg):
        return
    host = model_host(model_cfg)
    if host not in _NATIVE:
        return
    ok, why = bf16_native_ok(host)
    if not ok:
        raise ToolkitError(
            f"--precision bf16: this CPU cannot run the {host.upper()} kernel in bf16 (oneDNN: "
            f"{why}); use --precision fp32, or a CPU with bf16 support (AVX512-BF16 / AMX) or a GPU"
        )
