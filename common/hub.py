"""Files that let a trained model be shared on a model hub: safetensors weights and a model card.

* `write_safetensors(path, tensors, metadata)`: atomic, and refuses NaN/inf tensors like
  `common.io.atomic_torch_save` (nothing is written). Metadata values are strings (JSON for structure).
* `read_safetensors(path)`: (tensors, metadata); any failure is a one-line `CheckpointError`.
  `read_safetensors_metadata(path)`: the metadata alone, from the header (no tensor read).
* `file_sha256(path)`: the digest runs record for every model file they load (provenance).
* `model_card(front, body, results)`: a Hugging Face model card (`huggingface_hub.ModelCard` with
  `ModelCardData`: license, tags, datasets, the run's metrics as eval results) then Markdown;
  `write_card(folder, text)` writes it as README.md unless a README.md that no exporter wrote is
  there (a hand-written note is never overwritten: the card goes to MODEL_CARD.md instead).
* `export_each(files, write)`: an exporter's loop, the hub files of each checkpoint printed as written.
* `HubFolder`: the `save_pretrained` / `from_pretrained` of `huggingface_hub`'s mixins for local folders
  (model.safetensors + config.json + README.md, every file written atomically): `FrozenEncoder` and
  `SaliencyPredictor` use it. Nothing is downloaded: a folder that is not there is a FileNotFoundError.
"""

from __future__ import annotations

import hashlib
import inspect
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from common.io import CheckpointError, NonFiniteError, atomic_write_bytes, atomic_write_json, nonfinite_tensors

#: the license of this project (LICENSE), of every card and of the weights it writes
LICENSE = "mit"
#: the first line of every card's body: marks a README.md an exporter may rewrite
CARD_MARK = "<!-- model card written by a visarl exporter; rewritten on every export -->"


_DIGESTS: dict[
    tuple[str, int, int], str
] = {}  # (resolved path, mtime ns, size) -> sha256: a file read once per process


def file_sha256(path: str | os.PathLike) -> str:
    """The sha256 (hex) of a file's bytes, read in 1 MiB chunks; cached while the file's mtime and size stay."""
    path = Path(path).resolve()
    st = path.stat()
    key = (str(path), st.st_mtime_ns, st.st_size)
    if key not in _DIGESTS:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        _DIGESTS[key] = digest.hexdigest()
    return _DIGESTS[key]


def write_safetensors(path: str | os.PathLike, tensors: dict[str, Any], metadata: dict[str, str]) -> Path:
    """Tensors (any device, possibly sharing storage) -> `path` atomically; NonFiniteError if any holds NaN/inf."""
    from safetensors.torch import save

    bad = nonfinite_tensors(tensors)
    if bad:
        raise NonFiniteError(
            f"refusing to write {path}: {len(bad)} tensor(s) hold NaN or inf "
            f"({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}); the previous file (if any) is kept"
        )
    # safetensors refuses tensors that share memory or are not contiguous: write independent copies
    plain = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    return atomic_write_bytes(path, save(plain, metadata=metadata))


def read_safetensors(path: str | os.PathLike, what: str = "safetensors file") -> tuple[dict[str, Any], dict[str, str]]:
    """(tensors on the CPU, metadata) of a safetensors file; CheckpointError naming the file on any failure."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} {path} not found")
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
    except Exception as err:  # the library raises its own error types (header, truncation, dtype)
        raise CheckpointError(
            f"cannot load {what} {path}: it is damaged or not a safetensors file ({' '.join(str(err).split())[:200]})"
        ) from None


def read_safetensors_metadata(path: str | os.PathLike, what: str = "safetensors file") -> dict[str, str]:
    """The metadata of a safetensors file from its header alone (no tensor is read); CheckpointError naming the file
    on any failure."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} {path} not found")
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception as err:  # the library raises its own error types (header, truncation)
        raise CheckpointError(
            f"cannot read {what} {path}: it is damaged or not a safetensors file ({' '.join(str(err).split())[:200]})"
        ) from None


def model_card(front: dict[str, Any], body: str, results: Sequence[dict[str, Any]] = ()) -> str:
    """A Hugging Face model card through `huggingface_hub.ModelCard`: `ModelCardData` front matter (the project's
    LICENSE, `front`'s keys: library_name, pipeline_tag, tags, datasets, model_name and project keys such as
    task), the metrics `results` as model-index eval results (each: task_type, dataset_name, metric_type,
    metric_value, optional metric_name / dataset_split), then CARD_MARK and the Markdown body."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    front = dict(front)
    name = front.pop("model_name", None) or next(
        (line[2:] for line in body.splitlines() if line.startswith("# ")), "model"
    )
    evals = [EvalResult(**{"dataset_type": r["dataset_name"], **r}) for r in results]
    data = ModelCardData(license=LICENSE, model_name=name, eval_results=evals or None, **front)
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n{CARD_MARK}\n\n{body.strip()}\n"))


def write_card(folder: str | os.PathLike, text: str) -> Path:
    """`folder`/README.md, or MODEL_CARD.md when README.md exists and was not written by an exporter."""
    readme = Path(folder) / "README.md"
    foreign = readme.exists() and CARD_MARK not in readme.read_text(errors="replace")
    return atomic_write_bytes(readme.with_name("MODEL_CARD.md") if foreign else readme, text.encode())


def export_each(files: Sequence[Path], write: Callable[[Path], tuple[Path, Path]]) -> list[tuple[Path, Path]]:
    """The hub files (weights, card) `write` makes of each of `files`, each pair printed as it is written:
    the body of every exporter's `export(cfg)`."""
    written = []
    for path in files:
        written.append(write(path))
        print(" + ".join(map(str, written[-1])), flush=True)
    return written


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    return "\n".join(
        ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    )


#: the files of a `save_pretrained` folder
WEIGHTS_NAME, CONFIG_NAME = "model.safetensors", "config.json"


def local_model_folder(path: str | os.PathLike, what: str) -> Path:
    """`path` when it is a folder holding model.safetensors and config.json, else a FileNotFoundError naming the fix."""
    folder = Path(path)
    missing = [n for n in (WEIGHTS_NAME, CONFIG_NAME) if not (folder / n).is_file()]
    if not folder.is_dir() or missing:
        raise FileNotFoundError(
            f"{what} folder {folder} not found or without {' and '.join(missing or [WEIGHTS_NAME])}: "
            "from_pretrained reads a local folder that save_pretrained wrote (nothing is downloaded)"
        )
    return folder


def hub_mixins() -> tuple[type, type]:
    """(ModelHubMixin, PyTorchModelHubMixin) of huggingface_hub, or stand-ins where it is missing or older than the
    mixins' card metadata (0.22; a machine with only the runtime packages, such as the lent GPU node): there the
    models import and work, and only save_pretrained / from_pretrained raise ImportError naming the fix."""
    try:
        from huggingface_hub import ModelHubMixin, PyTorchModelHubMixin

        if "license" in inspect.signature(ModelHubMixin.__init_subclass__).parameters:
            return ModelHubMixin, PyTorchModelHubMixin
    except ImportError:
        pass

    class MissingHub:
        """save_pretrained / from_pretrained without huggingface_hub: an ImportError naming the fix."""

        def __init_subclass__(cls, **card_metadata: Any) -> None:
            super().__init_subclass__()

        def save_pretrained(self, *args: Any, **kwargs: Any) -> None:
            raise ImportError("save_pretrained needs huggingface_hub>=0.24: `pip install -U huggingface_hub`")

        @classmethod
        def from_pretrained(cls, *args: Any, **kwargs: Any) -> None:
            raise ImportError("from_pretrained needs huggingface_hub>=0.24: `pip install -U huggingface_hub`")

    return MissingHub, MissingHub


class HubFolder:
    """`from_pretrained` of a huggingface_hub mixin, for local folders only, and the folder's files written atomically.

    A class mixing this in before the hub mixin implements `_save_pretrained(folder)` with `write_hub_folder`,
    and `_from_pretrained(*, model_id, config, **kwargs)` from the folder's config dict."""

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs: Any):
        local_model_folder(pretrained_model_name_or_path, cls.__name__)
        return super().from_pretrained(pretrained_model_name_or_path, local_files_only=True, **kwargs)  # type: ignore[misc]


def write_hub_folder(
    folder: Path, tensors: dict[str, Any], metadata: dict[str, str], config: dict[str, Any], card: str
) -> None:
    """model.safetensors (NaN/inf refused: nothing written), config.json and the card, each atomically."""
    write_safetensors(folder / WEIGHTS_NAME, tensors, metadata)
    atomic_write_json(folder / CONFIG_NAME, config)
    write_card(folder, card)
