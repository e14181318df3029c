"""The tasks of the toolkit, one module per family over a small base (:mod:`.base`):

* :mod:`.mnist` -- ``smnist``, ``psmnist``, ``fmnist``, ``pfmnist`` (readers in :mod:`.mnist_files`);
* :mod:`.synthetic` -- ``copy`` and ``adding``;
* :mod:`.ptb` -- ``ptb`` (data and BPTT windows in :mod:`.ptb_data`, the model in ``..wordlm``);
* :mod:`.timit` -- ``timit`` (corpus and cache in :mod:`.timit_data`, audio in ``..audio``,
  the synthetic corpus in :mod:`.timit_fixture`);
* :mod:`.sequences` -- ``sequences``: your own data from an ``.npz``.

Importing this package registers them all in :data:`TASKS`. A new task subclasses
:class:`Task` and is decorated with :func:`register`.
"""

from ..loaders import Split
from . import mnist, ptb, sequences, synthetic, timit  # noqa: F401  (each registers its tasks)
from .base import TASKS, RunContext, StepOutput, Task, build_task, get_task_class, register

__all__ = ["TASKS", "RunContext", "StepOutput", "Task", "Split", "build_task", "get_task_class", "register"]
