"""huggingface_hub's save_pretrained / from_pretrained and model cards for the frozen encoder and the saliency
predictor (local folders, no network), the project's license, and the digests runs record."""

from __future__ import annotations

import hashlib
import json
import os
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard

from common.hub import CARD_MARK, file_sha256, model_card, read_safetensors_metadata, write_safetensors
from common.io import CheckpointError, NonFiniteError
from pretrain.frozen import FrozenEncoder
from pretrain.model import ModelConfig
from saliency.predictor import SaliencyPredictor, save_checkpoint
from saliency.student import StudentConfig, StudentNet

from tiny import TINY_MMAE

ROOT = Path(__file__).resolve().parent.parent
MCFG = ModelConfig(modalities=("rgb", "saliency"), **TINY_MMAE)


def encoder() -> FrozenEncoder:
    enc = FrozenEncoder.random_init(MCFG, pool="grid2", seed=3)
    g = torch.Generator().manual_seed(0)
    enc.set_standardization(torch.randn(128, generator=g), torch.rand(128, generator=g) + 0.5)
    enc.meta = {"task": "reach-v3", "step": 12}
    return enc


def test_frozen_encoder_round_trips_through_save_pretrained(tmp_path: Path):
    enc = encoder()
    enc.save_pretrained(tmp_path / "hub")
    assert sorted(os.listdir(tmp_path / "hub")) == ["README.md", "config.json", "model.safetensors"]
    config = json.loads((tmp_path / "hub" / "config.json").read_text())
    assert (config["inputs"], config["pool"], config["standardized"], config["out_dim"]) == (
        ["rgb", "saliency"],
        "grid2",
        True,
        128,
    )
    back = FrozenEncoder.from_pretrained(tmp_path / "hub")
    g = torch.Generator().manual_seed(1)
    rgb, sal = torch.rand(4, 3, 64, 64, generator=g), torch.rand(4, 1, 64, 64, generator=g)
    assert torch.equal(enc(rgb, sal), back(rgb, sal)) and back.standardized and back.meta == enc.meta
    assert not any(p.requires_grad for p in back.parameters()) and not back.training
    card = ModelCard.load(tmp_path / "hub" / "README.md")
    assert card.data.license == "mit" and {"visarl", "multimae", "saliency", "reach-v3"} <= set(card.data.tags)
    assert CARD_MARK in card.content and "FrozenEncoder.from_pretrained(FOLDER)" in card.content


def test_from_pretrained_reads_local_folders_only_and_refuses_damage(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        FrozenEncoder.from_pretrained(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        SaliencyPredictor.from_pretrained("some-user/some-model")  # a hub id: no network request
    encoder().save_pretrained(tmp_path / "hub")
    weights = tmp_path / "hub" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="damaged or not a safetensors file"):
        FrozenEncoder.from_pretrained(tmp_path / "hub")


def test_safetensors_metadata_reads_from_the_header_and_names_a_damaged_file(tmp_path: Path):
    path = write_safetensors(tmp_path / "e.safetensors", {"w": torch.ones(3)}, {"meta": json.dumps({"step": 7})})
    assert json.loads(read_safetensors_metadata(path)["meta"]) == {"step": 7}
    path.write_bytes(path.read_bytes()[:20])  # the header cut short
    with pytest.raises(CheckpointError, match=r"e\.safetensors: it is damaged or not a safetensors file"):
        read_safetensors_metadata(path)
    with pytest.raises(CheckpointError, match="not found"):
        read_safetensors_metadata(tmp_path / "none.safetensors")


def test_non_finite_weights_are_never_saved(tmp_path: Path):
    enc = encoder()
    enc.save_pretrained(tmp_path / "hub")
    before = (tmp_path / "hub" / "model.safetensors").read_bytes()
    with torch.no_grad():
        next(enc.model.parameters()).view(-1)[0] = float("nan")
    with pytest.raises(NonFiniteError, match="refusing to write"):
        enc.save_pretrained(tmp_path / "hub")
    assert (tmp_path / "hub" / "model.safetensors").read_bytes() == before  # the good copy is kept


def test_saliency_predictor_round_trips_with_its_scores_in_the_card(tmp_path: Path):
    torch.manual_seed(0)
    save_checkpoint(
        tmp_path / "student.pt",
        StudentNet(StudentConfig(width=4)),
        "student",
        epoch=5,
        val={"f_max": 0.8, "mae": 0.02, "n": 30.0},
        seen_keys=["00000-00001"],
        distill_config={"data": "shards/reach-v3", "frames": 300},
    )
    original = SaliencyPredictor.load(tmp_path / "student.pt", device="cpu")
    original.save_pretrained(tmp_path / "hub")
    back = SaliencyPredictor.from_pretrained(tmp_path / "hub", device="cpu")
    frames = np.random.default_rng(0).integers(0, 256, (3, 48, 48, 3), dtype=np.uint8)
    assert np.array_equal(original(frames), back(frames)) and back.kind == "student"
    assert back.seen_keys == {"00000-00001"} and back.info["epoch"] == 5
    # the folder's weights are a hub copy saliency.export would write: SaliencyPredictor.load reads them too
    assert np.array_equal(
        SaliencyPredictor.load(tmp_path / "hub" / "model.safetensors", device="cpu")(frames), back(frames)
    )
    card = ModelCard.load(tmp_path / "hub" / "README.md").data
    assert card.license == "mit" and "student" in card.tags
    assert {(r.metric_type, r.metric_value, r.dataset_name, r.dataset_split) for r in card.eval_results} == {
        ("f_max", 0.8, "reach-v3", "validation"),
        ("mae", 0.02, "reach-v3", "validation"),
    }


def test_model_card_metrics_and_license():
    text = model_card(
        {"library_name": "visarl", "tags": ["a"], "task": "reach-v3"},
        "# My model\n\nbody",
        [
            {
                "task_type": "feature-extraction",
                "dataset_name": "d",
                "metric_type": "r_squared",
                "metric_value": 0.5,
                "metric_name": "hand R^2",
            }
        ],
    )
    card = ModelCard(text)
    assert card.data.license == "mit" and card.data.model_name == "My model" and card.data.task == "reach-v3"
    assert [(r.metric_name, r.metric_value) for r in card.data.eval_results] == [("hand R^2", 0.5)]
    assert card.text.startswith(CARD_MARK)


def test_the_project_is_mit_licensed():
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "MIT" and project["license-files"] == ["LICENSE"]


def test_file_sha256_follows_the_bytes(tmp_path: Path):
    path = tmp_path / "w.bin"
    path.write_bytes(b"abc" * 1000)
    assert file_sha256(path) == hashlib.sha256(b"abc" * 1000).hexdigest()
    path.write_bytes(b"abd" * 1001)  # another size: the cached digest is not reused
    assert file_sha256(path) == hashlib.sha256(b"abd" * 1001).hexdigest()


def test_without_huggingface_hub_the_models_still_work(monkeypatch):
    """A machine with only the runtime packages (the lent GPU node): the mixins are stand-ins, only their
    save/load methods fail, naming the fix."""
    import sys

    from common.hub import HubFolder, hub_mixins

    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # `import huggingface_hub` raises ImportError
    _, mixin = hub_mixins()

    class Model(HubFolder, torch.nn.Module, mixin, license="mit", tags=["x"]):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(2))

    model = Model()
    assert torch.equal(model.w, torch.ones(2))
    with pytest.raises(ImportError, match="pip install -U huggingface_hub"):
        model.save_pretrained("anywhere")
    with pytest.raises(ImportError, match="pip install -U huggingface_hub"):
        mixin.from_pretrained("anywhere")
