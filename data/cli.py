"""Typed configs on the command line: one dataclass per entry point, every field in --help.

`parse_config(Config, argv, presets={"cpu": {...}, "paper": {...}})` builds an argparse parser from
the dataclass fields (their `metadata["help"]`), applies the chosen `--preset` first and explicit
flags after it, and returns the filled dataclass. Field `foo_bar` is the flag `--foo-bar`; bools
take `--flag/--no-flag`.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import typing
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

T = TypeVar("T")


def _base_type(tp: Any) -> Any:
    """Optional[X] / X | None -> X."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return args[0] if args and typing.get_origin(tp) in (typing.Union, getattr(__import__("types"), "UnionType", None)) else tp


def build_parser(cls: type, presets: Mapping[str, Mapping[str, Any]] | None = None, description: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=description or (cls.__doc__ or "").strip(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    if presets:
        parser.add_argument(
            "--preset", choices=sorted(presets), default=None,
            help="named settings applied before explicit flags: "
            + "; ".join(f"{k}: {', '.join(f'{f}={v}' for f, v in p.items())}" for k, p in presets.items()),
        )
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        flag = "--" + f.name.replace("_", "-")
        tp = _base_type(hints[f.name])
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        help_text = f.metadata.get("help", "")
        if tp is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=f"{help_text} (default: {default})")
        else:
            parser.add_argument(flag, type=tp, default=None, help=f"{help_text} (default: {default})",
                                choices=f.metadata.get("choices"))
    return parser


def parse_config(
    cls: type[T],
    argv: Sequence[str] | None = None,
    presets: Mapping[str, Mapping[str, Any]] | None = None,
    description: str | None = None,
) -> T:
    """Parse argv into `cls`: defaults < preset < explicit flags."""
    parser = build_parser(cls, presets, description)
    args = vars(parser.parse_args(sys.argv[1:] if argv is None else list(argv)))
    values: dict[str, Any] = {}
    preset = args.pop("preset", None) if presets else None
    if preset:
        values.update(presets[preset])
    values.update({k: v for k, v in args.items() if v is not None})
    try:
        cfg = cls(**values)
        if hasattr(cfg, "validate"):
            cfg.validate()
    except (TypeError, ValueError) as err:
        parser.error(str(err))
    if preset and any(f.name == "preset" for f in dataclasses.fields(cls)):
        cfg.preset = preset  # type: ignore[attr-defined]
    return cfg


def config_to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)
