"""Typed settings, shared by every training command: valid ranges, one validator and one message
format, and `--section.key=value` overrides that name an existing key and keep its type.

A command's config is a few dataclasses (its sections), each field with a default and a one-line
comment, each numeric field with a `Rule` in the class's `RULES` and each enumerated one in
`CHOICES`; `__post_init__` calls `check`. `override` applies command-line strings to the config's
dict form and `key_lines` lists every key for `--help`. Nothing is ever executed (minGPT's
`merge_from_args` and nanoGPT's configurator, without nanoGPT's `exec`).
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass


class ConfigError(ValueError):
    """A config value outside its valid range; the message names the key, the value and the range."""


@dataclass(frozen=True)
class Rule:
    """The valid values of one numeric key: `low <= value` (or `<` when `open_low`), `value <= high`
    (or `<` when `open_high`), finite; `zero` is allowed too when it means something (an "off")."""
    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False
    zero: str = ""          # what 0 means, when 0 is allowed outside [low, high]

    def describe(self) -> str:
        parts = []
        if self.low is not None:
            parts.append(f"{'>' if self.open_low else '>='} {self.low:g}")
        if self.high is not None:
            parts.append(f"{'<' if self.open_high else '<='} {self.high:g}")
        text = " and ".join(parts) or "a finite number"
        return f"{text}, or 0 ({self.zero})" if self.zero else text

    def allows(self, value: float) -> bool:
        if self.zero and value == 0:
            return True
        if not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.open_low else value < self.low):
            return False
        return self.high is None or (value < self.high if self.open_high else value <= self.high)


POSITIVE = Rule(low=1)
NON_NEGATIVE = Rule(low=0)
FRACTION = Rule(low=0, high=1, open_high=True)


def check(section: str, obj) -> None:
    """The one validator: every key of `obj` against its section's `RULES` and `CHOICES`; raises
    ConfigError with the message format `section.key=value: must be <rule>`."""
    for name, rule in obj.RULES.items():
        value = getattr(obj, name)
        if not rule.allows(value):
            fail(section, name, value, rule.describe())
    for name, choices in getattr(obj, "CHOICES", {}).items():
        if getattr(obj, name) not in choices:
            fail(section, name, getattr(obj, name), "one of " + ", ".join(map(repr, choices)))


def fail(section: str, name: str, value, must: str):
    raise ConfigError(f"{section}.{name}={value!r}: must be {must}")


def parse(raw: str, kind: type, name: str):
    """`raw` as the declared type; bool needs true/false, float accepts ints, nothing else converts."""
    if kind is bool:
        if raw.lower() in ("true", "1", "yes"):
            return True
        if raw.lower() in ("false", "0", "no"):
            return False
    elif kind is int:
        try:
            return int(raw)
        except ValueError:
            pass
    elif kind is float:
        try:
            return float(raw)
        except ValueError:
            pass
    elif kind is str:
        return raw
    raise ConfigError(f"--{name}={raw!r}: expected {kind.__name__}")


def resolve_key(key: str, sections: dict[str, type], command: str, scope: str = "") -> tuple[str, str]:
    """`train.lr` -> (train, lr); a bare `lr` only when exactly one section has it. `scope` says
    whose keys these are when a command has several sets (e.g. "for a gptface model")."""
    if "." in key:
        section, _, name = key.partition(".")
        if section not in sections or name not in {f.name for f in dataclasses.fields(sections[section])}:
            raise ConfigError(f"--{key}: no such config key{' ' + scope if scope else ''} (sections: "
                              f"{', '.join(sections)}; see `facecorpus {command} --help`)")
        return section, name
    hits = [s for s in sections if key in {f.name for f in dataclasses.fields(sections[s])}]
    if len(hits) != 1:
        problem = "no such config key" if not hits else f"ambiguous, write one of {', '.join(f'{s}.{key}' for s in hits)}"
        raise ConfigError(f"--{key}: {problem}")
    return hits[0], key


def override(d: dict, sections: dict[str, type], args: list[str], command: str, scope: str = "") -> dict:
    """Apply `--section.key=value` strings to a config's dict form (sections as dicts); returns it."""
    for arg in args:
        if not arg.startswith("--") or "=" not in arg:
            raise ConfigError(f"{arg!r}: overrides are written --section.key=value (e.g. --train.lr=1e-4)")
        key, _, raw = arg[2:].partition("=")
        section, name = resolve_key(key, sections, command, scope)
        kind = typing.get_type_hints(sections[section])[name]
        d[section][name] = parse(raw, kind, f"{section}.{name}")
    return d


def key_lines(sections: dict[str, type]) -> list[str]:
    """Every key with its default and its valid values, for `--help`."""
    lines = []
    for section, kind in sections.items():
        for f in dataclasses.fields(kind):
            rule = kind.RULES.get(f.name) or getattr(kind, "CHOICES", {}).get(f.name)
            valid = rule.describe() if isinstance(rule, Rule) else " | ".join(rule) if rule else ""
            lines.append(f"{section}.{f.name}={f.default}" + (f"  ({valid})" if valid else ""))
    return lines
