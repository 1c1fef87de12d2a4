import pytest

from cuboid_ad.core.config import SECTIONS, Config, config_differences, load_config, to_toml
from cuboid_ad.core.errors import ConfigError


def test_defaults_are_valid_and_round_trip_through_toml(tmp_path):
    cfg = Config()
    path = tmp_path / "c.toml"
    path.write_text(to_toml(cfg))
    assert load_config(path) == cfg


def test_json_round_trip_keeps_every_section():
    cfg = Config.from_dict({"cuboids": {"grid_rows": 2}, "model": {"filters": [8, 16]}})
    again = Config.from_json(cfg.to_json())
    assert again == cfg
    assert again.model.filters == (8, 16)


def test_an_artifact_recorded_before_a_default_changed_reads_as_what_its_code_did():
    data = Config().to_dict()
    del data["score"]["calibrate_on"]  # artifacts written before the key existed calibrated on held-out blocks
    old = Config.from_record(data)
    assert old.score.calibrate_on == "held_out"
    assert any("calibrate_on" in d for d in config_differences(old, Config(), ("score",)))
    assert Config.from_json(Config().to_json()) == Config()


def test_file_overrides_defaults_section_by_section(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[cuboids]\ngrid_rows = 2\n[train]\nepochs = 3\n")
    cfg = load_config(path)
    assert (cfg.cuboids.grid_rows, cfg.cuboids.grid_cols, cfg.train.epochs) == (2, Config().cuboids.grid_cols, 3)


def test_paper_preset_is_the_reference_architecture():
    cfg = load_config(preset="paper")
    assert cfg.model.filters == (64, 128) and cfg.model.bottleneck_channels == 0 and cfg.model.input == "frames"


@pytest.mark.parametrize(
    "text, needle",
    [
        ("[cuboids]\ngrid_rowz = 2\n", "cuboids.grid_rowz"),
        ("[nonsense]\na = 1\n", "unknown section"),
        ("[cuboids]\npatch_size = 'big'\n", "wrong type"),
        ("[cuboids]\nclip_length_in_frames = 1\n", "clip_length_in_frames"),
        ("[score]\nframes_between_clips = 20\n", "must not exceed"),
        ("[cuboids]\npatch_size = 50\n", "divisible"),
        ("[cuboids]\nflow_preset = 'slow'\n", "cuboids.flow_preset must be one of medium, fast, ultrafast"),
        ("preset = 'huge'\n", "unknown preset"),
        ("[extract\n", "not valid TOML"),
    ],
)
def test_bad_configs_are_refused_with_the_key_named(tmp_path, text, needle):
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=needle):
        load_config(path)


def test_missing_config_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")


def test_differences_name_section_key_and_both_values():
    a = Config()
    b = a.with_overrides(cuboids={"grid_rows": 2}, train={"epochs": 1})
    assert config_differences(a, b, ("cuboids",)) == ["cuboids.grid_rows was 3, now 2"]
    assert config_differences(a, b, ("extract",)) == []
    assert len(config_differences(a, b, ("cuboids", "train"))) == 2


def test_every_preset_but_default_is_written_out_in_full():
    """A preset that left a key to the default would change whenever that default changed."""
    from cuboid_ad.core.config import PRESETS

    every = Config().to_dict()
    for name, preset in PRESETS.items():
        if name == "default":
            assert preset == {}
            continue
        assert set(preset) == set(SECTIONS), name
        for section in SECTIONS:
            assert set(preset[section]) == set(every[section]), f"preset {name} leaves [{section}] keys to the defaults"
