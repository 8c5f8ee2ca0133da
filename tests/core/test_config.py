"""Config loading: extends, overrides, typos, and component names."""

import pytest
import yaml

from core.config import ConfigError, load_config
from core.plugins import PluginError, build_registries
from tests.helpers import ROOT


def write(path, data):
    path.write_text(yaml.safe_dump(data))
    return path


def test_extends_and_overrides(tmp_path):
    base = write(tmp_path / "base.yaml", {"train": {"epochs": 3, "lr": 0.1}, "neck": {"name": "gem_bn", "dropout": 0.2}})
    child = write(tmp_path / "child.yaml", {"extends": "base.yaml", "train": {"epochs": 5}})
    cfg = load_config(child, ["train.batch_size=7", "data.image_size=[32,48]"])
    assert cfg.train.epochs == 5 and cfg.train.lr == 0.1 and cfg.train.batch_size == 7
    assert list(cfg.data.image_size) == [32, 48]
    assert cfg.neck.dropout == 0.2
    assert base.exists()


def test_component_change_drops_other_plugins_options(tmp_path):
    write(tmp_path / "base.yaml", {"neck": {"name": "gem_bn", "dropout": 0.2}})
    child = write(tmp_path / "child.yaml", {"extends": "base.yaml", "neck": {"name": "other", "size": 3}})
    cfg = load_config(child)
    assert dict(cfg.neck) == {"name": "other", "size": 3}


def test_top_level_typo_is_an_error_naming_file_and_suggestion(tmp_path):
    bad = write(tmp_path / "bad.yaml", {"trian": {"epochs": 1}})
    with pytest.raises(ConfigError, match=r"bad.yaml.*'trian'.*Did you mean 'train'"):
        load_config(bad)


def test_nested_typo_and_override_typo():
    with pytest.raises(ConfigError, match=r"'train.epoch'.*Did you mean 'train.epochs'"):
        load_config(None, ["train.epoch=3"])
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, ["train.epochs"])


def test_missing_file_cycle_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    write(tmp_path / "a.yaml", {"extends": "b.yaml"})
    write(tmp_path / "b.yaml", {"extends": "a.yaml"})
    with pytest.raises(ConfigError, match="cycle"):
        load_config(tmp_path / "a.yaml")
    (tmp_path / "broken.yaml").write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="cannot parse"):
        load_config(tmp_path / "broken.yaml")


def test_mixed_precision_no_survives_yaml_booleans():
    assert load_config(None, ["train.mixed_precision=no"]).train.mixed_precision == "no"


def test_invalid_values(tmp_path):
    with pytest.raises(ConfigError, match="mixed_precision"):
        load_config(None, ["train.mixed_precision=fp8"])
    with pytest.raises(ConfigError, match="fold"):
        load_config(None, ["data.fold=9"])


SHIPPED = sorted(str(p.relative_to(ROOT / "configs")) for p in (ROOT / "configs").rglob("*.yaml")
                 if "ablation" not in p.relative_to(ROOT / "configs").parts)  # ablation specs: tests/tools/test_ablate.py


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_config_loads(name):
    path = ROOT / "configs" / name
    cfg = load_config(path)
    registries = build_registries(cfg.plugins)
    for point in ("dataset", "backbone", "neck", "loss"):
        registries[point].factory(cfg[point].name)
    if cfg.backbone.name == "timm":
        import timm

        assert timm.is_model(cfg.backbone.model), cfg.backbone.model


def test_unknown_component_lists_known_names_and_providers():
    registries = build_registries()
    with pytest.raises(PluginError, match=r"unknown neck 'gem_bm'.*Did you mean 'gem_bn'.*gem_bn \(from plugins.necks.gem_bn\)"):
        registries["neck"].build({"name": "gem_bm"}, in_features=8)


def test_unknown_component_option_is_an_error():
    registries = build_registries()
    with pytest.raises(PluginError, match=r"neck 'gem_bn' has no option 'embeding_size'.*embedding_size"):
        registries["neck"].build({"name": "gem_bn", "embeding_size": 8}, in_features=8)


def test_unknown_plugin_module():
    with pytest.raises(PluginError, match="cannot import plugin module 'no_such_plugin'"):
        build_registries(["no_such_plugin"])


def test_the_code_defaults_are_base_yamls():
    """One place for defaults: every value core/config.py's DEFAULTS sets is the same in configs/base.yaml, so a
    run without a config is the documented default recipe; base.yaml only adds the component plugins' options."""
    from omegaconf import OmegaConf

    from core.config import DEFAULTS
    from core.training.runs import flatten

    base = OmegaConf.to_container(OmegaConf.load(ROOT / "configs" / "base.yaml"), resolve=True)
    flat_base = flatten(base)
    for key, value in flatten(DEFAULTS).items():
        if key in ("output_dir",):  # where a run goes is the command's choice, not the recipe's
            continue
        top = key.split(".")[0]
        if top not in base:
            continue  # base.yaml leaves this key at the code's default
        if key in flat_base:
            assert flat_base[key] == value, f"{key}: code default {value!r}, base.yaml {flat_base[key]!r}"
        else:
            assert isinstance(base[top], dict), f"{key}: base.yaml's {top!r} is not a mapping"
    loaded = load_config(None)
    assert [s["name"] for s in OmegaConf.to_container(loaded.postprocess)] == [s["name"] for s in base["postprocess"]]
    for node in ("dataset", "backbone", "neck", "loss"):
        assert loaded[node].name == base[node]["name"]
