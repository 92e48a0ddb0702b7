"""Dataset name -> converter module, imported on demand."""

from __future__ import annotations

import importlib
from types import ModuleType

from facecorpus.records import DATASETS, web_name_problem

# Folders under RAW_ROOT that hold no dataset of their own but files other datasets need.
SUPPORT_FOLDERS = {
    "celebahq": "CelebA-HQ-to-CelebA-mapping.txt links the CelebA-HQ caption sets to CelebA photos",
}


# Converters of web sets, which read a downloader's output and take the dataset name from the user
# (`convert img2dataset DIR --name NAME`); each curated dataset has a converter of its own name.
WEB_CONVERTERS = ("img2dataset",)


def module(converter: str) -> ModuleType:
    if converter not in DATASETS and converter not in WEB_CONVERTERS:
        raise ValueError(f"unknown dataset {converter!r}; choose one of: {', '.join(DATASETS + WEB_CONVERTERS)}")
    return importlib.import_module(f"facecorpus.converters.{converter}")


def check_source(name: str, converter: str) -> None:
    """A dataset name its converter may write: a curated converter only its own, a web converter a
    name of the user's that takes no curated dataset's (records.web_name_problem)."""
    if converter in WEB_CONVERTERS:
        if problem := web_name_problem(name):
            raise ValueError(f"--name {name}: {problem}")
    elif name != converter:
        raise ValueError(f"the {converter} converter writes dataset {converter!r}, not {name!r}")
    module(converter)


def options(name: str, overrides: dict[str, str]) -> dict:
    """The converter's DEFAULTS with the user's `--set NAME.KEY=VALUE` overrides (or a web converter's
    command-line options), keeping each type."""
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
