"""Lets `lm_eval --model fastdllm` (and `accelerate launch -m lm_eval --model fastdllm`) find
fastdllm-ray's lm-eval backend from any shell, once fastdllm-ray is installed.

Why a hook: lm-eval 0.4 looks models up in its own registry only (`lm_eval.api.registry`); it
scans no entry points, so an installed package cannot add a model by metadata alone. So the
wheel ships `fastdllm_ray_lmeval.pth` at the top of site-packages; Python runs its one line at
every interpreter start, which imports this small module (no torch, no fastdllm_ray, no lm_eval).
It adds an import hook that, when lm-eval's registry module has been imported, registers
"fastdllm" there as a lazy "module:Class" reference: nothing of fastdllm_ray is imported until
lm-eval asks for that model. Any other import costs one string comparison, and a failure here
warns instead of breaking the interpreter.
"""

from __future__ import annotations

import importlib.abc
import sys
import warnings

MODEL_NAME = "fastdllm"
TARGET = "fastdllm_ray.lmeval.backend:FastDLLMLM"
REGISTRY_MODULE = "lm_eval.api.registry"


def register(registry) -> None:
    """Adds the lazy "fastdllm" entry to lm-eval's model registry module."""
    # lm-eval fills its registry with its own models only while the registry is empty
    # (registry.get_model): make sure they are in before ours, or "hf" etc. would vanish
    import lm_eval.models  # noqa: F401

    if MODEL_NAME not in registry.model_registry:
        registry.model_registry.register(MODEL_NAME, target=TARGET)


class _RegisterAfterExec(importlib.abc.Loader):
    """Runs the real loader, then registers; everything else is the real loader's."""

    def __init__(self, loader) -> None:
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        self._loader.exec_module(module)
        try:
            register(module)
        except Exception as exc:  # an lm-eval whose registry differs: say so, break nothing
            warnings.warn(f"fastdllm-ray could not register its lm-eval model {MODEL_NAME!r}: {exc!r}")

    def __getattr__(self, name):
        return getattr(self._loader, name)


class _RegistryWatcher(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname != REGISTRY_MODULE:
            return None
        sys.meta_path.remove(self)  # one shot, and the lookup below must not find us again
        for finder in sys.meta_path:
            spec = finder.find_spec(fullname, path, target) if hasattr(finder, "find_spec") else None
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _RegisterAfterExec(spec.loader)
                return spec
        return None


def install() -> None:
    """Called by the .pth line at interpreter start."""
    if REGISTRY_MODULE in sys.modules:  # already imported (never at start-up, but be exact)
        register(sys.modules[REGISTRY_MODULE])
    elif not any(isinstance(f, _RegistryWatcher) for f in sys.meta_path):
        sys.meta_path.insert(0, _RegistryWatcher())
