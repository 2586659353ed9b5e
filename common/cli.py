"""Typed configs on the command line: one dataclass per entry point, every field in --help.

`parse_config(Config, argv, presets={"cpu": {...}, "paper": {...}})` builds an argparse parser from
the dataclass fields (their `metadata["help"]`), applies the chosen `--preset` first and explicit
flags after it, and returns the filled dataclass. Field `foo_bar` is the flag `--foo-bar`; bools
take `--flag/--no-flag`; a field made by `resume_field()` takes `--resume` bare or `--resume auto`.

`--config PATH` (every command) starts from a run's config.json: defaults < the file's values <
`--preset` < explicit flags, so `python -m rl.sac --config runs/sac/.../config.json --out NEW` reruns
a run. Every stage writes a file it takes: a run folder's config.json, saliency.distill's
`distill-<student>-config.json`, or a JSON report's "config" entry (pretrain.probe, rl.evaluate). `parse_flags` parses flags given inside another command's flag (the pipeline's `--sac-extra`)
and raises ValueError naming that flag instead of exiting.

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
import errno
import json
import math
import os
import sys
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import field
from pathlib import Path
from typing import Any, NoReturn, TypeVar

T = TypeVar("T")

NOT_WRITABLE_ERRNOS = (errno.EACCES, errno.EPERM, errno.EROFS)


def _base_type(tp: Any) -> Any:
    """Optional[X] / X | None -> X."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return (
        args[0]
        if args and typing.get_origin(tp) in (typing.Union, getattr(__import__("types"), "UnionType", None))
        else tp
    )


def fail(message: str, keep_lines: bool = False) -> NoReturn:
    """Print `error: message` to stderr (one line, or its own lines with `keep_lines`, as for a list of
    files that need attention) and exit with status 2."""
    text = str(message).strip() if keep_lines else " ".join(str(message).split())
    print(f"error: {text}", file=sys.stderr, flush=True)
    raise SystemExit(2)


class StartupError(ValueError):
    """A bad setting found while modules load, before any command's main() and its `one_line_errors()`
    run (an environment variable such as MUJOCO_GL). Library code raises it like any ValueError; left
    uncaught, the process prints it as one line `error: ...` and exits 2 (`_exit_on_startup_error`)."""


def _exit_on_startup_error(kind: type[BaseException], err: BaseException, tb: Any) -> None:
    """sys.excepthook: an uncaught StartupError (raised by an import of a command's module, outside
    main()) is one line and status 2; anything else goes to the hook that was there before."""
    if issubclass(kind, StartupError):
        sys.stdout.flush()
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr, flush=True)
        os._exit(2)  # the interpreter sets status 1 after any excepthook; nothing else has run yet
    _previous_excepthook(kind, err, tb)


_previous_excepthook = sys.excepthook
sys.excepthook = _exit_on_startup_error


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are one line (no usage block), exit status 2. Flags are taken only whole: with
    argparse's prefix matching a typo that shortens a flag (`--warmup-epoch`) was taken silently, and a
    prefix that is unique today becomes ambiguous when a config gains a field."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        fail(f"{message} (see {self.prog} --help)")


class RaisingParser(OneLineParser):
    """argparse whose errors raise ValueError (for flags checked inside another command)."""

    def error(self, message: str) -> NoReturn:
        raise ValueError(f"{message} (see {self.prog} --help)")


def finite_float(text: str) -> float:
    """argparse type: a finite float ('inf' and 'nan' are refused)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def option(default: Any, help: str, **metadata: Any) -> Any:
    """A documented config field: its default, the `--help` text, and parser settings (`choices=[...]`,
    `positional=True`, `nonfinite=True`). The one way configs declare a field (mutable defaults use
    `field(default_factory=...)`)."""
    return field(default=default, metadata={"help": help, **metadata})


def nested(cls: type, prefix: str = "", rename: Mapping[str, str] | None = None, **defaults: Any) -> Any:
    """A config field holding the config dataclass `cls`, whose fields are flat flags of the outer config.

    Field `name` of `cls` is the flag `--<prefix><name>` (GazeConfig's `k` with prefix "gaze_" is
    `--gaze-k`), or `--<rename[name]>`; `defaults` override `cls`'s own defaults in this config.
    """
    return field(
        default_factory=lambda: cls(**defaults),
        metadata={"nested": cls, "prefix": prefix, "rename": dict(rename or {})},
    )


def flat_fields(cls: type) -> list[tuple[str, tuple[str, ...], dataclasses.Field]]:
    """(flag name, attribute path, field) of every init field of config class `cls`, nested configs flattened."""
    out: list[tuple[str, tuple[str, ...], dataclasses.Field]] = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        inner = f.metadata.get("nested")
        if inner is None:
            out.append((f.name, (f.name,), f))
            continue
        prefix, rename = f.metadata["prefix"], f.metadata["rename"]
        for name, path, sub in flat_fields(inner):
            out.append((rename.get(name, prefix + name), (f.name, *path), sub))
    return out


def _get(cfg: Any, path: Sequence[str]) -> Any:
    for name in path:
        cfg = getattr(cfg, name)
    return cfg


def flat_dict(cfg: Any) -> dict[str, Any]:
    """{flag name: value} of config `cfg`: the layout of config.json and of presets, nested configs flattened."""
    return {name: _get(cfg, path) for name, path, _ in flat_fields(type(cfg))}


def from_flat(cls: type[T], values: Mapping[str, Any] | None = None, /, **more: Any) -> T:
    """Build config class `cls` from flag names (`from_flat(CollectConfig, task="door-open-v3", episode_steps=40)`
    or a {flag name: value} mapping); missing names keep their defaults.

    A name that is no field raises TypeError naming it, as the dataclass constructor would.
    """
    values = {**(values or {}), **more}
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        inner = f.metadata.get("nested")
        if inner is None:
            if f.name in values:
                kwargs[f.name] = values.pop(f.name)
            continue
        prefix, rename = f.metadata["prefix"], f.metadata["rename"]
        base = flat_dict(f.default_factory())
        picked = {}
        for name, *_ in flat_fields(inner):
            outer = rename.get(name, prefix + name)
            picked[name] = values.pop(outer, base[name])
        kwargs[f.name] = from_flat(inner, picked)
    if values:
        raise TypeError(f"{cls.__name__} has no field(s) {', '.join(sorted(values))}")
    return cls(**kwargs)


def from_stored(cls: type[T], stored: Mapping[str, Any]) -> T:
    """Config class `cls` from a stored flat dict (config.json, a checkpoint's "config"), ignoring names
    that are not (or no longer) its fields, such as `code_version`."""
    names = {name for name, *_ in flat_fields(cls)}
    return from_flat(cls, {k: v for k, v in stored.items() if k in names})


def as_flags(values: Mapping[str, Any]) -> list[str]:
    """{flag name: value} -> the words that set them on a command line (`--gaze-k 8`, `--no-flip`)."""
    words: list[str] = []
    for name, value in values.items():
        flag = name.replace("_", "-")
        if isinstance(value, bool):
            words.append(f"--{flag}" if value else f"--no-{flag}")
        else:
            words += [f"--{flag}", ",".join(map(str, value)) if isinstance(value, (tuple, list)) else str(value)]
    return words


def replace_flat(cfg: T, **changes: Any) -> T:
    """A copy of config `cfg` with fields changed by flag name (`replace_flat(sac, task="door-open-v3", gaze_k=8)`)."""
    new = from_flat(type(cfg), {**flat_dict(cfg), **changes})
    for f in dataclasses.fields(cfg):
        if not f.init:  # e.g. `preset`, set after construction
            setattr(new, f.name, getattr(cfg, f.name))
    return new


def int_list(text: str, flag: str) -> list[int]:
    """Comma-separated integers ('0,1,2') as a list; ValueError naming `flag` if a word is no integer or none is given."""
    try:
        values = [int(word) for word in text.split(",") if word.strip()]
    except ValueError:
        raise ValueError(f"{flag} takes comma-separated integers, got {text!r}") from None
    if not values:
        raise ValueError(f"{flag} takes comma-separated integers, got none")
    return values


def check_finite(cfg: Any, names: Sequence[str] | None = None) -> Any:
    """Raise ValueError naming the first float field of config `cfg` (or of `names`) that is NaN or inf.

    Nested configs are searched too. Fields whose metadata sets `"nonfinite": True` are skipped.
    Returns `cfg`.
    """
    for name, path, f in flat_fields(type(cfg)):
        if (names is None and f.metadata.get("nonfinite")) or (names is not None and name not in names):
            continue
        value = _get(cfg, path)
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"--{name.replace('_', '-')} must be a finite number, got {value}")
    return cfg


@contextlib.contextmanager
def one_line_errors(*extra: type[BaseException]) -> Iterator[None]:
    """In a command's main(): errors a user can fix exit with one line `error: ...` and status 2.

    Covers ShardError, CheckpointError, NonFiniteError, OutputError, DiskFullError (and any OSError that
    is a full disk), FileNotFoundError, ValueError, TypeError, a file or folder the process may not write
    (read-only or no permission), running out of memory, `SystemExit("error: ...")` (whose status
    would be 1), and the `extra` types given.
    """
    from common.io import DiskFullError, ShardError, disk_full_error, failed_path, is_disk_full

    try:
        yield
    except SystemExit as err:
        if isinstance(err.code, str) and err.code.startswith("error: "):  # a refusal raised with a message: status 2
            fail(err.code.removeprefix("error: "))
        raise
    except DiskFullError as err:
        fail(err.strerror)
    except (ShardError, FileNotFoundError, ValueError, TypeError, *extra) as err:
        fail(str(err))
    except MemoryError:
        fail("out of memory; lower --batch-size (or the flag that sizes what was being allocated) and run again")
    except (OSError, RuntimeError) as err:
        if is_disk_full(err):
            fail(disk_full_error(failed_path(err), err).strerror)
        if isinstance(err, RuntimeError) and (
            "can't allocate memory" in str(err) or "out of memory" in str(err).lower()
        ):
            fail(
                f"out of memory ({str(err).splitlines()[0][:200]}); lower --batch-size (or the flag that sizes what "
                "was being allocated) and run again"
            )
        if isinstance(err, OSError) and err.errno in NOT_WRITABLE_ERRNOS:
            fail(f"cannot access {failed_path(err)}: {err.strerror}; choose another --out (or fix its permissions)")
        raise


RESUME_HELP = (
    "continue the run in --out from its checkpoint (one must exist); '--resume auto': continue if a "
    "checkpoint exists, else start (a requeued job reruns the same command); without it an existing run is refused"
)


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
        raise FileNotFoundError(
            f"--resume: {where} not found; start without --resume, or pass --resume auto to start when there is none"
        )
    return bool(mode) and found


def command_name(module: str) -> str:
    """`python -m <command>` for a parser built in `module`: the command the user ran when it is in the
    same package (`python -m pretrain.multimae` runs pretrain.train's parser), else `module` itself."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    started = spec.name.removesuffix(".__main__") if spec else ""
    if module == "__main__" or (started and started.split(".")[0] == module.split(".")[0]):
        module = started or module
    return f"python -m {module.removesuffix('.__main__')}"


def _owner(cls: type, path: Sequence[str]) -> type:
    """The config class that declares the field at attribute `path` of `cls`."""
    for name in path[:-1]:
        cls = next(f for f in dataclasses.fields(cls) if f.name == name).metadata["nested"]
    return cls


#: config.json entries that record a run rather than set a flag (common.runs, rl/provenance.py)
RECORD_KEYS = frozenset({"code_version", "inputs", "preset"})


def build_parser(
    cls: type,
    presets: Mapping[str, Mapping[str, Any]] | None = None,
    description: str | None = None,
    prog: str | None = None,
    parser_class: type[argparse.ArgumentParser] = OneLineParser,
) -> argparse.ArgumentParser:
    parser = parser_class(
        prog=prog or command_name(cls.__module__),
        description=description or (cls.__doc__ or "").strip(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    if not any(name == "config" for name, *_ in flat_fields(cls)):
        parser.add_argument(
            "--config",
            dest="config_file",
            default=None,
            metavar="PATH",
            help="start from a run's config.json (what `--help` lists, as that run set it): its values, "
            "then --preset, then the flags given here; e.g. add --out NEW to rerun the run",
        )
    if presets:
        parser.add_argument(
            "--preset",
            choices=sorted(presets),
            default=None,
            help="named settings applied before explicit flags: "
            + "; ".join(f"{k}: {', '.join(f'{f}={v}' for f, v in p.items())}" for k, p in presets.items()),
        )
    defaults = flat_dict(cls())
    for name, path, f in flat_fields(cls):
        flag = "--" + name.replace("_", "-")
        tp = _base_type(typing.get_type_hints(_owner(cls, path))[f.name])
        default = defaults[name]
        if isinstance(default, tuple):  # a tuple field takes "a,b" (its __post_init__ splits it)
            tp, default = str, ",".join(map(str, default))
        help_text = f"{f.metadata.get('help', '')} (default: {default})".replace(
            "%", "%%"
        )  # literal: argparse formats it
        if "nargs" in f.metadata:  # e.g. resume_field(): an optional value
            parser.add_argument(
                flag,
                dest=name,
                nargs=f.metadata["nargs"],
                const=f.metadata["const"],
                type=f.metadata["type"],
                default=None,
                metavar="auto",
                help=help_text,
            )
        elif tp is bool:
            parser.add_argument(
                flag,
                dest=name,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=help_text,
            )
        else:
            if tp is float and not f.metadata.get("nonfinite"):
                tp = finite_float
            parser.add_argument(
                flag,
                dest=name,
                type=tp,
                default=None,
                help=help_text,
                choices=f.metadata.get("choices"),
            )
    return parser


def _positional_as_flag(cls: type, argv: list[str]) -> list[str]:
    """Leading words before any flag fill the field whose metadata sets `"positional": True`, joined by
    commas (`python -m pipeline.report runs/sac runs/other` is `--roots runs/sac,runs/other`)."""
    names = [name for name, _, f in flat_fields(cls) if f.metadata.get("positional")]
    words = []
    while names and argv and not argv[0].startswith("-"):
        words.append(argv.pop(0))
    return ["--" + names[0].replace("_", "-"), ",".join(words), *argv] if words else argv


def stored_values(cls: type, path: str | Path) -> tuple[dict[str, Any], str]:
    """({flag name: value}, preset) of a config.json for config class `cls`, or of the "config" entry of a
    JSON report that records its flags there (pretrain.probe's probe_*.json, rl.evaluate's report);
    ValueError naming entries that are not its fields (another command's config)."""
    path = Path(path)
    try:
        stored = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"--config {path} not found; pass a run's config.json") from None
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"--config {path} is not a readable JSON file ({err})") from None
    if not isinstance(stored, dict):
        raise ValueError(f"--config {path} must hold a JSON object of flag names and values")
    names = {name for name, *_ in flat_fields(cls)}
    if isinstance(stored.get("config"), dict) and "config" not in names:  # a report (pretrain.probe, rl.evaluate)
        stored = stored["config"]
    foreign = sorted(k for k in stored if k not in names and k not in RECORD_KEYS)
    if foreign:
        raise ValueError(
            f"--config {path} sets {', '.join(foreign[:5])}{', ...' if len(foreign) > 5 else ''}, which "
            f"{cls.__name__} does not have: is it another command's config.json?"
        )
    return {k: v for k, v in stored.items() if k in names}, str(stored.get("preset") or "")


def _parse(
    cls: type[T],
    argv: Sequence[str],
    presets: Mapping[str, Mapping[str, Any]] | None,
    description: str | None,
    prog: str,
    parser_class: type[argparse.ArgumentParser],
) -> T:
    parser = build_parser(cls, presets, description, prog=prog, parser_class=parser_class)
    args = vars(parser.parse_args(_positional_as_flag(cls, list(argv))))
    values: dict[str, Any] = {}
    preset = args.pop("preset", None) if presets else None
    config_file = args.pop("config_file", None)
    try:
        stored_preset = ""
        if config_file:
            stored, stored_preset = stored_values(cls, config_file)
            values.update(stored)
        if preset:
            values.update(presets[preset])
        values.update({k: v for k, v in args.items() if v is not None})
        cfg = check_finite(from_flat(cls, values))
        if hasattr(cfg, "validate"):
            cfg.validate()
    except (TypeError, ValueError) as err:
        parser.error(str(err))
    if (preset or stored_preset) and any(f.name == "preset" for f in dataclasses.fields(cls)):
        cfg.preset = preset or stored_preset  # type: ignore[attr-defined]
    return cfg


def parse_config(
    cls: type[T],
    argv: Sequence[str] | None = None,
    presets: Mapping[str, Mapping[str, Any]] | None = None,
    description: str | None = None,
    module: str | None = None,
) -> T:
    """Parse argv into `cls`: defaults < --config file < preset < explicit flags. `module` (default: the
    caller's) names the command in usage lines."""
    module = module or sys._getframe(1).f_globals.get("__name__", cls.__module__)
    return _parse(
        cls, sys.argv[1:] if argv is None else list(argv), presets, description, command_name(module), OneLineParser
    )


def parse_flags(
    cls: type[T],
    words: Sequence[str],
    presets: Mapping[str, Mapping[str, Any]] | None = None,
    command: str = "",
    what: str = "",
) -> T:
    """`parse_config` for flags given inside another command's flag: ValueError `<what>: <problem> (see <command>
    --help)` instead of an exit, so a pipeline can check its pass-through strings before any stage runs."""
    try:
        return _parse(cls, words, presets, None, command or command_name(cls.__module__), RaisingParser)
    except ValueError as err:
        raise ValueError(f"{what}: {err}" if what else str(err)) from None


def run_command(
    cls: type[T],
    run: Callable[[T], Any],
    argv: Sequence[str] | None = None,
    presets: Mapping[str, Mapping[str, Any]] | None = None,
    description: str | None = None,
    errors: tuple[type[BaseException], ...] = (),
    module: str | None = None,
) -> Any:
    """A command's main(): parse argv into `cls`, then return `run(cfg)`; bad flags and the errors a user
    can fix (`one_line_errors`, plus `errors`) end with one line on stderr and exit status 2. `module` (default: the
    caller's) names the command in usage lines."""
    module = module or sys._getframe(1).f_globals.get("__name__", cls.__module__)
    cfg = parse_config(cls, argv, presets, description, module=module)
    with one_line_errors(*errors):
        return run(cfg)
