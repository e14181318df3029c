"""Recipe resolution: defaults < recipe < command line, presets, validation messages."""

from __future__ import annotations

import pytest

from momentumrnn.toolkit.config import load_recipe, model_spec, recipe_names, resolve
from momentumrnn.toolkit.errors import ToolkitError


def test_defaults_are_the_paper_smnist_setting():
    cfg = resolve(None, [])
    assert cfg["task"]["name"] == "smnist"
    assert cfg["model"] == {"mu": 0.6, "epsilon": 0.6, "name": "MomentumLSTM", "hidden_size": 128}
    assert cfg["optim"]["name"] == "rmsprop" and cfg["optim"]["lr"] == 1e-3 and cfg["optim"]["alpha"] == 0.9
    assert cfg["train"]["grad_clip"] == 1.0 and cfg["train"]["batch_size"] == 128


def test_precedence_preset_model_cli():
    recipe = {"model": {"name": "MomentumLSTM", "mu": 0.5}, "presets": {"MomentumLSTM": {"mu": 0.1, "epsilon": 0.2}}}
    cfg = resolve(recipe, [])
    assert cfg["model"]["mu"] == 0.5 and cfg["model"]["epsilon"] == 0.2
    cfg = resolve(recipe, [("model.mu", 0.3)])
    assert cfg["model"]["mu"] == 0.3


def test_cli_model_replaces_identity_and_takes_its_preset():
    cfg = resolve(None, [("model.name", "AdamLSTM")])
    assert cfg["model"]["name"] == "AdamLSTM" and cfg["model"]["beta"] == 0.1
    cfg = resolve({"model": {"host": "lstm", "scheme": "adam"}}, [])
    assert "name" not in cfg["model"] and cfg["model"]["host"] == "lstm"
    cfg = resolve(None, [("model.name", "gru/heavy_ball")])
    assert cfg["model"]["host"] == "gru" and cfg["model"]["scheme"] == "heavy_ball" and "name" not in cfg["model"]
    assert model_spec("lstm:nesterov") == {"host": "lstm", "scheme": "nesterov"}


def test_strings_from_the_command_line_are_coerced():
    cfg = resolve(
        None, [("optim.lr", "1e-3"), ("train.epochs", "3"), ("train.grad_clip", "null"), ("train.progress", "false")]
    )
    assert cfg["optim"]["lr"] == 1e-3 and cfg["train"]["epochs"] == 3
    assert cfg["train"]["grad_clip"] is None and cfg["train"]["progress"] is False


@pytest.mark.parametrize(
    "overrides, message",
    [
        ([("train.epoch", 3)], "unknown recipe key 'train.epoch' (did you mean 'epochs'?)"),
        ([("trian.epochs", 3)], "unknown recipe key 'trian'"),
        ([("task.seq_len", 5)], "unknown recipe key 'task.seq_len'"),
        ([("task.name", "mnist")], "unknown task 'mnist'"),
        ([("optim.name", "lbfgs")], "optim.name: unknown value 'lbfgs'"),
        ([("train.epochs", "three")], "train.epochs: expected an integer, got 'three'"),
        ([("train.epochs", 2.5)], "train.epochs: expected an integer"),
        ([("train.epochs", 0)], "train.epochs: 0 is out of range (must be >= 1)"),
        ([("optim.lr", -1)], "optim.lr: -1.0 is out of range (must be > 0)"),
        ([("optim.alpha", 1.0)], "optim.alpha: 1.0 is out of range"),
        ([("train.precision", "fp16")], "train.precision: unknown value 'fp16'; choose one of fp32, bf16"),
        ([("train.progress", "maybe")], "train.progress: expected true or false"),
        ([("optim.betas", [0.9])], "optim.betas: expected a list of 2 values"),
        ([("model.input_size", 3)], "model.input_size is set by the task"),
        ([("model.hidden_size", 0)], "model.hidden_size: 0 is out of range"),
        ([("model.mu", {"a": 1})], "model.mu: expected a number"),
        ([("model.name", "MomentumLSTM"), ("model.host", "lstm")], "model: name a model"),
    ],
)
def test_bad_values_name_the_key(overrides, message):
    with pytest.raises(ToolkitError) as e:
        resolve(None, overrides)
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_bad_recipe_shapes():
    with pytest.raises(ToolkitError, match="give either name"):
        resolve({"model": {"name": "MomentumLSTM", "host": "lstm"}}, [])
    with pytest.raises(ToolkitError, match="unknown recipe key 'trainer'"):
        resolve({"trainer": {}}, [])
    with pytest.raises(ToolkitError, match="train: expected a mapping"):
        resolve({"train": 5}, [])
    with pytest.raises(ToolkitError, match="seeds: expected a list"):
        resolve({"seeds": 3}, [], command="compare")


def test_compare_models_seeds_and_labels():
    cfg = resolve(
        {"models": ["LSTM", "MomentumLSTM", {"name": "MomentumLSTM", "mu": 0.3}], "seeds": [1, 2]},
        [("model.hidden_size", 32)],
        command="compare",
    )
    labels = [m.get("label") or m["name"] for m in cfg["models"]]
    assert labels[0] == "LSTM" and len(set(labels)) == 3
    assert all(m["hidden_size"] == 32 for m in cfg["models"])
    assert cfg["models"][0].get("mu") is None and cfg["models"][1]["mu"] == 0.6 and cfg["models"][2]["mu"] == 0.3
    assert cfg["seeds"] == [1, 2]
    with pytest.raises(ToolkitError, match="repeated"):
        resolve({"seeds": [1, 1]}, [], command="compare")


def test_bundled_recipes_resolve():
    assert {"demo", "mnist-table1", "pmnist-table1", "smnist-small", "adding"} <= set(recipe_names())
    for name in recipe_names():
        recipe = load_recipe(name)
        resolve(recipe, [], command="compare")
        resolve(recipe, [], command="train")


def test_recipe_file_errors(tmp_path):
    with pytest.raises(ToolkitError, match="not found"):
        load_recipe(str(tmp_path / "nope.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {epochs: [1, 2\n")
    with pytest.raises(ToolkitError, match="not valid YAML"):
        load_recipe(str(bad))
    lst = tmp_path / "list.yaml"
    lst.write_text("- 1\n- 2\n")
    with pytest.raises(ToolkitError, match="must be a mapping"):
        load_recipe(str(lst))


def test_a_resolved_config_resolves_to_itself():
    cfg = resolve(
        load_recipe("mnist-table1"),
        [("model.name", "AdamLSTM"), ("task.name", "psmnist"), ("model.label", "adam"), ("train.threads", 1)],
    )
    again = resolve(dict(cfg.items()), [])
    assert again == cfg


def test_a_task_name_as_recipe_means_the_defaults_on_that_task():
    assert load_recipe("psmnist") == {"task": {"name": "psmnist"}}
    cfg = resolve(load_recipe("psmnist"), [], command="train")
    assert cfg["task"]["name"] == "psmnist" and cfg["model"]["name"] == "MomentumLSTM"
    with pytest.raises(ToolkitError, match="task name"):
        load_recipe("no-such-thing")


def test_a_folder_named_like_a_bundled_recipe_does_not_hide_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "smnist-small").mkdir()  # e.g. the output of `compare smnist-small --out smnist-small`
    assert load_recipe("smnist-small")["task"]["name"] == "smnist"
    with pytest.raises(ToolkitError, match="is a directory"):
        load_recipe(str(tmp_path / "smnist-small"))
