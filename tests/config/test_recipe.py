"""The shipped model's recipe: every stage config loads, reproduce.sh names only files that exist, and the shipped
checkpoint's config is the stage that made it."""

import re
from pathlib import Path

import pytest

from mole_inference.config import load_model_config
from mole_inference.sim.ablate import load_ablation_config

MODEL = Path(__file__).resolve().parents[2] / "models" / "mole-tiny"
RECIPE = MODEL / "recipe"


@pytest.mark.parametrize("path", sorted(p for p in RECIPE.rglob("*.yaml") if p.name != "ablation.yaml"),
                         ids=lambda p: str(p.relative_to(RECIPE)))
def test_every_stage_config_loads(path):
    cfg = load_model_config(path)
    assert cfg.training.max_steps > 0


def test_ablation_config_loads_and_names_a_stage_of_the_recipe():
    cfg = load_ablation_config(RECIPE / "ablation.yaml")
    assert (MODEL.parents[1] / cfg.config).is_file()


def test_reproduce_names_only_existing_stage_configs():
    script = (RECIPE / "reproduce.sh").read_text()
    named = set(re.findall(r"\$recipe/(stage_[a-z]+_(?:mole|full)\.yaml)", script))
    named |= {f"stage_{s}_{kind}.yaml" for s in re.findall(r"^train_pair ([a-z]+) ", script, re.M)
              for kind in ("mole", "full")}
    assert named, "no stage configs found in reproduce.sh"
    missing = sorted(n for n in named if not (RECIPE / n).is_file())
    assert not missing, f"reproduce.sh names configs that are not in recipe/: {missing}"


def test_shipped_config_is_the_last_stage_of_the_recipe():
    """models/mole-tiny/config.yaml is written by the training run of the stage that shipped; the card names it."""
    card = (MODEL / "README.md").read_text()
    stage = re.search(r"\*\*Status \(stage ([A-Z]+)\)", card)
    assert stage, "the card's status line names the shipped stage"
    shipped = load_model_config(MODEL / "config.yaml")
    assert shipped == load_model_config(RECIPE / f"stage_{stage.group(1).lower()}_mole.yaml")
