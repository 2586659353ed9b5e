"""Typed configs on the command line: one dataclass per entry point, every field in --help.

`parse_config(Config, argv, presets={"cpu": {...}, "paper": {...}})` builds an argparse parser from
the dataclass fields (their `metadata["help"]`), applies the chosen `--preset` first and explicit
flags after it, and returns the filled dataclass. Field `foo_bar` is the flag `--foo-bar`; bools
take `--flag/--no-flag`; a field made by `resume_field()` takes `--resume` bare or `--resume auto`.

Refusals are one line on stderr and exit status 2: a bad flag (`error: argument --lr: must be a
finite number, got 'inf'`), a failed `validate()`, and, inside `with one_line_errors():` in a
command's main(), the errors users can fix (damaged shards, unloadable checkpoints, a full disk,
diverged training). Float fields accept finite numbers only (`check_finite`), unless their field
metadata sets `"nonfinite": True`.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import sys
import typing
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, NoReturn, TypeVar

T = TypeVar("T")


def _base_type(tp: Any) -> Any:
    """Optional[X] / X | None -> X."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return args[0] if args and typing.get_origin(tp) in (typing.Union, getattr(__import__("types"), "UnionType", None)) else tp


def fail(message: str) -> NoReturn:
    """Print `error: message` (one line) to stderr and exit with status 2."""
    print(f"error: {' '.join(str(message).split())}", file=sys.stderr, flush=True)
    raise SystemExit(2)


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are one line (no usage block), exit status 2."""

    def error(self, message: str) -> NoReturn:
        fail(f"{message} (see {self.prog} --help)")


def finite_float(text: str) -> float:
    """argparse type: a finite float ('inf' and 'nan' are refused)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def check_finite(cfg: Any, names: Sequence[str] | None = None) -> Any:
    """Raise ValueError naming the first float field of dataclass `cfg` (or of `names`) that is NaN or inf.

    Fields whose metadata sets `"nonfinite": True` are skipped. Returns `cfg`.
    """
    for f in dataclasses.fields(cfg):
        if (names is None and f.metadata.get("nonfinite")) or (names is not None and f.name not in names):
            continue
        value = getattr(cfg, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"--{f.name.replace('_', '-')} must be a finite number, got {value}")
    return cfg


@contextlib.contextmanager
def one_line_errors(*extra: type[BaseException]) -> Iterator[None]:
    """In a command's main(): errors a user can fix exit with one line `error: ...` and status 2.

    Covers ShardError, CheckpointError, NonFiniteError, DiskFullError (and any OSError that is a
    full disk), FileNotFoundError, ValueError, TypeError, and the `extra` types given.
    """
    from common.io import DiskFullError, ShardError, disk_full_error, failed_path, is_disk_full

    try:
        yield
    except DiskFullError as err:
        fail(err.strerror)
    except (ShardError, FileNotFoundError, ValueError, TypeError, *extra) as err:
        fail(str(err))
    except (OSError, RuntimeError) as err:
        if is_disk_full(err):
            fail(disk_full_error(failed_path(err), err).strerror)
        raise


RESUME_HELP = ("continue the run in --out from its checkpoint (one must exist); '--resume auto': continue if a "
               "checkpoint exists, else start (a requeued job reruns the same command); without it an existing run is refused")


def resume_mode(value: Any) -> bool | str:
    """A resume setting as False (start; an existing run is refused), True (a checkpoint must exist) or 'auto'.

    Python callers pass True/False; the command line and JSON specs give 'auto' (or yes/no words).
    """
    text = str(value).strip().lower()
    if value is None or value is False or text in ("", "0", "false", "no", "never"):
        return False
    if value is True or text in ("1", "true", "yes", "must"):
        return True
    if text == "auto":
        return "auto"
    raise ValueError(f"--resume takes no value or 'auto', got {value!r}")


def _resume_arg(text: str) -> bool | str:
    try:
        return resume_mode(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def resume_field(help: str = RESUME_HELP) -> Any:
    """A dataclass field for `--resume [auto]`: bare `--resume` is True, `--resume auto` is 'auto', absent is False."""
    return dataclasses.field(default=False, metadata={"help": help, "nargs": "?", "const": True, "type": _resume_arg})


def should_resume(mode: Any, found: bool, where: Any) -> bool:
    """Whether to load the checkpoint (at `where`): never for False, if `found` for 'auto'; True without
    one raises FileNotFoundError naming `where` and the fix."""
    mode = resume_mode(mode)
    if mode is True and not found:
        raise FileNotFoundError(f"--resume: {where} not found; start without --resume, or pass --resume auto "
                                "to start when there is none")
    return bool(mode) and found


def command_name(module: str) -> str:
    """`python -m <command>` for a parser built in `module`: the command the user ran when it is in the
    same package (`python -m pretrain.multimae` runs pretrain.train's parser), else `module` itself."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    started = spec.name.removesuffix(".__main__") if spec else ""
    if module == "__main__" or (started and started.split(".")[0] == module.split(".")[0]):
        module = started or module
    return f"python -m {module.removesuffix('.__main__')}"


def build_parser(cls: type, presets: Mapping[str, Mapping[str, Any]] | None = None, description: str | None = None,
                 prog: str | None = None) -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=prog or command_name(cls.__module__),
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
        if "nargs" in f.metadata:  # e.g. resume_field(): an optional value
            parser.add_argument(flag, nargs=f.metadata["nargs"], const=f.metadata["const"], type=f.metadata["type"],
                                default=None, metavar="auto", help=f"{help_text} (default: {default})")
        elif tp is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=f"{help_text} (default: {default})")
        else:
            if tp is float and not f.metadata.get("nonfinite"):
                tp = finite_float
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
    parser = build_parser(cls, presets, description, prog=command_name(sys._getframe(1).f_globals.get("__name__", cls.__module__)))
    args = vars(parser.parse_args(sys.argv[1:] if argv is None else list(argv)))
    values: dict[str, Any] = {}
    preset = args.pop("preset", None) if presets else None
    if preset:
        values.update(presets[preset])
    values.update({k: v for k, v in args.items() if v is not None})
    try:
        cfg = check_finite(cls(**values))
        if hasattr(cfg, "validate"):
            cfg.validate()
    except (TypeError, ValueError) as err:
        parser.error(str(err))
    if preset and any(f.name == "preset" for f in dataclasses.fields(cls)):
        cfg.preset = preset  # type: ignore[attr-defined]
    return cfg
