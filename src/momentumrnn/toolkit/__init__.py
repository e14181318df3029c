"""Experiment toolkit of momentumrnn: train, compare and report from one command.

Needs the ``train`` extra (``pip install 'momentumrnn[train]'``): PyTorch Lightning, PyYAML,
matplotlib, tqdm, TensorBoard. The core package (``import momentumrnn``) never imports this
sub-package, so it stays usable without those dependencies.

Entry points:

* ``momentumrnn`` / ``python -m momentumrnn`` -- the command line (:mod:`.cli`);
* :func:`momentumrnn.toolkit.runner.train_run` -- one run from a resolved config (Python API);
* :func:`momentumrnn.toolkit.report.make_report` -- tables and plots from run directories.
"""

from .errors import ToolkitError

__all__ = ["ToolkitError"]
