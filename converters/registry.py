"""Dataset name -> converter module, imported on demand."""

from __future__ import annotations

import importlib
from types import ModuleType

from facecorpus.records import DATASETS

# Folders under RAW_ROOT that hold no dataset of their own but files other datasets need.
SUPPORT_FOLDERS = {
    "celebahq": "CelebA-HQ-to-CelebA-mapping.txt links the CelebA-HQ caption sets to CelebA photos",
}


def module(name: str) -> ModuleType:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    return importlib.import_module(f"facecorpus.converters.{name}")


def options(name: str, overrides: dict[str, str]) -> dict:
    """The module's DEFAULTS with the user's `--set NAME.KEY=VALUE` overrides, keeping each type."""
    defaults = dict(getattr(module(name), "DEFAULTS", {}))
    for key, text in overrides.items():
        if key not in defaults:
            raise ValueError(f"--set {name}.{key}: unknown option; {name} has {sorted(defaults) or 'none'}")
        kind = type(defaults[key])
        if kind is bool:
            if text.lower() not in ("true", "false", "1", "0"):
                raise ValueError(f"--set {name}.{key}={text}: expected true or false")
            defaults[key] = text.lower() in ("true", "1")
        else:
            try:
                defaults[key] = kind(text)
            except ValueError:
                raise ValueError(f"--set {name}.{key}={text}: expected {kind.__name__}") from None
    return defaults
