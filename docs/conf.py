"""Sphinx configuration of the documentation site (``bash scripts/docs.sh``; README, "Documentation").

Why Sphinx (with MyST for the Markdown pages) and not MkDocs: the docstrings are reStructuredText
(``literal``, ``:class:`X```, ``:func:`.runner.train_run``` roles, module-relative targets), which
autodoc renders and resolves natively; a Markdown renderer would print the roles as text. The
guides stay Markdown (MyST), readable on GitHub as they are. Strict mode (``-W -n``) turns every
unresolved reference, broken link or missing page into an error.

The build needs no network: no intersphinx inventories are fetched (references into torch, numpy
and Lightning are left unlinked, ``nitpick_ignore_regex`` below), and the search index is
Sphinx's own. Viewing rendered formulas loads MathJax from its CDN (``mathjax_path``).
"""

from __future__ import annotations

import importlib
import inspect
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # document this checkout's sources, whatever is installed

from sphinx.ext import napoleon  # noqa: E402
from sphinx.util.docutils import SphinxDirective  # noqa: E402

import momentumrnn  # noqa: E402

project = "momentumrnn"
author = "the momentumrnn developers"
copyright = "the momentumrnn developers"  # noqa: A001 - Sphinx's name
version = release = momentumrnn.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
]

root_doc = "index"
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build", "api/_*"]
html_theme = "furo"
html_title = f"momentumrnn {release}"
html_static_path: list[str] = []
templates_path: list[str] = []

# ---------------------------------------------------------------- Markdown (MyST)
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 4  # GitHub's heading slugs: the guides' links (equations.md#5-names) resolve
suppress_warnings: list[str] = []

# ---------------------------------------------------------------- API reference (autodoc)
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_class_signature = "mixed"
autodoc_inherit_docstrings = True
autodoc_default_options = {"show-inheritance": True}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_use_param = False  # keeps "input_size, hidden_size, ...: as in torch.nn.LSTM" one entry
add_module_names = False
python_use_unqualified_type_names = True

# Strict: every reference must resolve (``-n``), except into the libraries we build on, whose
# inventories would have to be downloaded (no network during the build).
nitpicky = True
nitpick_ignore_regex = [
    (r"py:.*", r"(torch|numpy|np|lightning|pytorch_lightning|yaml|matplotlib|scipy|soundfile)(\..*)?"),
    (r"py:.*", r"(Tensor|nn\.Module|Module|Parameter|PackedSequence|ndarray|dtype|device)"),
    (r"py:.*", r"(typing|collections\.abc|pathlib|argparse|contextlib|enum|types|re|io|os)\..*"),
    (r"py:.*", r"(Path|Any|Callable|Optional|Union|Iterator|Iterable|Sequence|Mapping|NamedTuple)"),
    # torch's names that annotations use unqualified: torch.types.Device, the hook handle,
    # parametrize's ParametrizationList, the torch.ops namespace
    (r"py:.*", r"(Device|RemovableHandle|ParametrizationList|_OpNamespace)"),
    # the package's private annotation helpers (momentumrnn._typing's aliases and protocols, the
    # lengths' SeqInfo, a scheme's StepDrive, the loaders' Rows protocol, init's TypeVar): named in
    # signatures, documented where they are used, not public names of the reference
    (
        r"py:.*",
        r"(momentumrnn\.[\w.]*\.)?(HyperParameters|Hidden|StepResult|Factory|Layer|SeqInfo|StepDrive|Rows|_Layer)",
    ),
]

# ---------------------------------------------------------------- every public name is documented
#: The public API: every name of these modules' ``__all__`` ...
PUBLIC_MODULES = [
    "momentumrnn",
    "momentumrnn.backends",
    "momentumrnn.orthogonal",
    "momentumrnn.toolkit",
    "momentumrnn.toolkit.tasks",
]
#: ... and the toolkit's Python API (docs/toolkit.md, "Python"), whose modules have no ``__all__``.
PUBLIC_NAMES = [
    "momentumrnn.toolkit.config.load_recipe",
    "momentumrnn.toolkit.config.resolve",
    "momentumrnn.toolkit.config.recipe_names",
    "momentumrnn.toolkit.config.load_run_config",
    "momentumrnn.toolkit.runner.train_run",
    "momentumrnn.toolkit.compare.compare_runs",
    "momentumrnn.toolkit.compare.write_job_list",
    "momentumrnn.toolkit.report.make_report",
    "momentumrnn.toolkit.grads.run_grads",
    "momentumrnn.toolkit.sweep.run_sweep",
    "momentumrnn.toolkit.probe.hidden_gradient_norms",
    "momentumrnn.toolkit.probe.load_grad_norms",
    "momentumrnn.toolkit.runfiles.read_metrics",
    "momentumrnn.backends._build.status",
]


def _public() -> dict:
    """``{public dotted name: object}``."""
    out = {}
    for modname in PUBLIC_MODULES:
        mod = importlib.import_module(modname)
        for name in mod.__all__:
            obj = getattr(mod, name)
            if not isinstance(obj, type(sys)):  # sub-modules are documented by their members
                out[f"{modname}.{name}"] = obj
    for dotted in PUBLIC_NAMES:
        modname, name = dotted.rsplit(".", 1)
        out[dotted] = getattr(importlib.import_module(modname), name)
    return out


def _resolve(dotted: str):
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        try:
            for p in parts[i:]:
                obj = getattr(obj, p)
        except AttributeError:
            return None
        return obj
    return None


def check_public_names_documented(app, env) -> None:
    """A warning (an error under ``-W``) for each public name that no page documents, under its
    own name or as the object some other documented name points to (``momentumrnn.MomentumDTRIV``
    documents ``momentumrnn.orthogonal.MomentumDTRIV``)."""
    from sphinx.util import logging

    documented = set(env.get_domain("py").objects)
    ids = {id(o) for o in map(_resolve, documented) if o is not None and not isinstance(o, (int, float, str))}
    missing = [n for n, obj in _public().items() if n not in documented and id(obj) not in ids]
    log = logging.getLogger("momentumrnn.docs")
    for name in sorted(missing):
        log.warning("public name %s is not documented in the API reference (docs/api/)", name)


def source_comment_of_reexports(app, what, name, obj, options, lines) -> None:
    """A public table re-exported from the module that defines it (``momentumrnn.LAYER_NAMES`` is
    ``momentumrnn.registry.LAYER_NAMES``) is documented by its ``#:`` comment there; autodoc only
    reads the comments of the module it documents, and would show the docstring of ``dict``."""
    if what != "data" or (lines and "\n".join(lines).strip() != (inspect.getdoc(type(obj)) or "").strip()):
        return
    from sphinx.pycode import ModuleAnalyzer
    from sphinx.util import logging

    attr = name.rsplit(".", 1)[-1]
    for modname, mod in sorted(sys.modules.items()):
        if not modname.startswith("momentumrnn") or getattr(mod, attr, None) is not obj:
            continue
        try:
            comment = ModuleAnalyzer.for_module(modname).find_attr_docs().get(("", attr))
        except Exception:  # a module without source: try the next
            continue
        if comment:
            lines[:] = [ln for ln in comment if ln]
            return
    lines[:] = []
    logging.getLogger("momentumrnn.docs").warning("public table %s has no #: comment where it is defined", name)


class PaperClasses(SphinxDirective):
    """``{paper-classes} layers HOST`` / ``{paper-classes} cells HOST``: the paper-named classes of one
    host and their aliases, from the registry (so a new scheme or host appears without editing
    the pages), each documented as ``momentumrnn.NAME``."""

    required_arguments = 2

    def run(self):
        from momentumrnn import registry

        kind, host = self.arguments
        if kind == "layers":
            names = [n for n, (h, _, _) in registry.LAYER_NAMES.items() if h == host]
            aliases = registry.LAYER_ALIASES
        elif kind == "cells":
            names = [n for n, (h, _) in registry.CELL_NAMES.items() if h == host]
            aliases = registry.CELL_ALIASES
        else:
            raise self.error(f"paper-classes: expected 'layers' or 'cells', got {kind!r}")
        if not names:
            raise self.error(f"paper-classes: no {kind} registered for host {host!r}")
        names += [a for a, target in aliases.items() if target in names]
        rst = "\n\n".join(f".. autoclass:: momentumrnn.{n}" for n in names)
        return self.parse_text_to_nodes(f"```{{eval-rst}}\n{rst}\n```\n")  # the pages are MyST


def napoleon_except_tables(app, what, name, obj, options, lines) -> None:
    """Napoleon's Google-style sections (``Args:``) for functions and classes only: it would read
    the first line of a ``#:`` comment or a property's docstring as ``type: description``, and the
    project's comments use colons freely (``#: gates per host: the input drive has ...``)."""
    if what not in ("data", "attribute", "property"):
        napoleon._process_docstring(app, what, name, obj, options, lines)


def setup(app):
    for listener in list(app.events.listeners["autodoc-process-docstring"]):
        if listener.handler is napoleon._process_docstring:
            app.disconnect(listener.id)
    app.connect("autodoc-process-docstring", napoleon_except_tables)
    app.add_directive("paper-classes", PaperClasses)
    app.connect("autodoc-process-docstring", source_comment_of_reexports, priority=100)  # before napoleon
    app.connect("env-check-consistency", check_public_names_documented)
