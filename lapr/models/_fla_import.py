"""Import the fla families lapr adapts without importing every fla family (a start-up shim).

`import fla.models.delta_net` normally runs fla/__init__.py, fla/layers/__init__.py,
fla/ops/__init__.py and fla/models/__init__.py first, and those import *every* layer, op and model
family fla ships (~40 of them): ~5-8 s of a ~10 s start-up on a slow CPU, paid by each of the
~150 short `python -m lapr ...` jobs of a workflow. lapr needs a few families (lapr.families).

`install()` puts *lazy* package objects for those four packages into `sys.modules` before fla is
imported: same name, `__path__`, `__file__` and `__spec__` as the real ones, but their __init__ is
not run. Importing a submodule (`fla.layers.delta_net`, `fla.ops.delta_rule`, `fla.models.utils`,
...) works as usual, because Python only needs the parent's `__path__` for that. Everything else
fla's package __init__ would have defined is still there on demand: the first access to a name the
lazy package lacks (`fla.models.GLAConfig`, `from fla.layers import MomAttention`, `fla.__all__`)
runs the real __init__ source inside the same module object and then answers it — so the shim can
only make imports cheaper, never make a name disappear. fla.modules / fla.utils / fla.backends are
left alone (their __init__ files create module aliases the layers import).

`import_families()` also defers fla's import-time `torch.compile(...)` calls (see
_deferred_torch_compile). Where fla is already imported nothing happens; LAPR_FLA_LAZY=0 turns
both off (plain imports).
Model registration with transformers' Auto classes is done by each family's own package
(fla/models/delta_net/__init__.py ...), which each lapr family module imports explicitly, so
`AutoModelForCausalLM.from_pretrained` of a saved checkpoint keeps working.
"""
from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.util
import os
import re
import sys
import types
import warnings
from pathlib import Path

LAZY_PACKAGES = ("fla", "fla.layers", "fla.ops", "fla.models")


class _LazyPackage(types.ModuleType):
    """A package whose __init__ runs only when a name it would define is asked for."""

    def __getattr__(self, name: str):
        d = self.__dict__
        if name.startswith("__") and name not in ("__all__", "__version__"):
            raise AttributeError(name)  # probes by inspect/pickle/copy: do not trigger the import
        # a submodule that simply has not been imported yet (fla.models.utils ...)
        if not name.startswith("_") and not d.get("_lapr_loaded"):
            sub = f"{self.__name__}.{name}"
            try:
                if importlib.util.find_spec(sub) is not None:
                    return importlib.import_module(sub)
            except (ImportError, ValueError):
                pass
        if not d.get("_lapr_loaded"):
            d["_lapr_loaded"] = True
            source = Path(self.__file__).read_text()
            exec(compile(source, self.__file__, "exec"), d)  # the real __init__, in this module
            if name in d:
                return d[name]
        raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")


def install() -> bool:
    """Put the lazy fla packages in place; True if installed, False if fla was already imported,
    is not installed, or LAPR_FLA_LAZY=0."""
    if os.environ.get("LAPR_FLA_LAZY", "1") == "0" or "fla" in sys.modules:
        return False
    spec = importlib.util.find_spec("fla")  # a top-level find_spec runs no code
    if spec is None or not spec.submodule_search_locations or not spec.origin:
        return False
    roots = list(spec.submodule_search_locations)
    specs = {"fla": spec}
    for name in LAZY_PACKAGES[1:]:
        locations = [str(Path(r, *name.split(".")[1:])) for r in roots]
        init = Path(locations[0]) / "__init__.py"
        if not init.exists():
            return False  # an fla of another layout: leave everything to the real import
        specs[name] = importlib.util.spec_from_file_location(name, init, submodule_search_locations=locations)
    for name, sub_spec in specs.items():
        module = _LazyPackage(name)
        module.__spec__ = sub_spec
        module.__file__ = sub_spec.origin
        module.__path__ = list(sub_spec.submodule_search_locations)
        module.__package__ = name
        module.__loader__ = sub_spec.loader
        if name == "fla":  # fla.utils does `from fla import __version__`
            found = re.search(r"__version__\s*=\s*['\"]([^'\"]+)", Path(sub_spec.origin).read_text())
            if found:
                module.__version__ = found.group(1)
        sys.modules[name] = module
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(sys.modules[parent], child, module)
    return True


@contextlib.contextmanager
def _deferred_torch_compile():
    """While fla's modules are imported, `torch.compile(fn)` returns a wrapper that calls the real
    `torch.compile(fn, ...)` on its first call. torch.compile is lazy anyway (it compiles on the first
    call); but *creating* a compiled function imports torch._inductor (~1-1.5 s here), which fla does
    at import time for a dozen helpers (GELU, token shift, ...) that DeltaNet / GDN never call."""
    import torch

    real = torch.compile

    def deferred(model=None, **kwargs):
        if model is None:  # used as @torch.compile(...)
            return lambda fn: deferred(fn, **kwargs)
        if not callable(model) or isinstance(model, torch.nn.Module):
            return real(model, **kwargs)
        compiled = None

        @functools.wraps(model)
        def first_call_compiles(*args, **kw):
            nonlocal compiled
            if compiled is None:
                compiled = real(model, **kwargs)
            return compiled(*args, **kw)

        return first_call_compiles

    torch.compile = deferred
    try:
        yield
    finally:
        torch.compile = real


def import_families(modules: list[str]) -> dict:
    """Import the lapr family `modules` (each imports, and so registers with transformers' Auto
    classes, its fla family); returns {name: module}."""
    # without a Triton GPU fla warns at import that it falls back to CPU; lapr runs its own CPU
    # backend there (lapr.backends), so the warning only added a stderr line to every CPU command
    warnings.filterwarnings("ignore", message="Triton is not supported on current platform")
    if all(m in sys.modules for m in modules) or os.environ.get("LAPR_FLA_LAZY", "1") == "0":
        return {m: importlib.import_module(m) for m in modules}  # LAPR_FLA_LAZY=0: plain imports
    install()
    with _deferred_torch_compile():
        return {m: importlib.import_module(m) for m in modules}
