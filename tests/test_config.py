"""Config files, variants, overrides and validation errors that name the key."""

import textwrap

import pytest

from dalle import config as config_lib
from dalle.config import ConfigError

EXAMPLE = "configs/example_mesh.py"


def test_load_fills_defaults_and_variant():
    c = config_lib.load_config(EXAMPLE)
    assert c.mesh.shape == (-1, 1, 1) and c.train.batch_size == 8
    assert c.train.optimizer.b1 == 0.9  # filled from the schema
    assert c.train.schedule.name == "cosine"
    v = config_lib.load_config(EXAMPLE + ":model_parallel")
    assert v.mesh.shape == (-1, 1, 2)


def test_unknown_variant_names_it():
    with pytest.raises(ConfigError, match="unknown variant 'nope'"):
        config_lib.load_config(EXAMPLE + ":nope")


def test_overrides_typed():
    c = config_lib.load_config(EXAMPLE, ["--config.train.batch_size=16", "--config.train.optimizer.lr=3e-4",
                                         "--config.mesh.shape=(2,2,2)", "--config.train.remat=true",
                                         "--config.train.optimizer.weight_decay=0"])
    assert c.train.batch_size == 16 and isinstance(c.train.batch_size, int)
    assert c.train.optimizer.lr == pytest.approx(3e-4)
    assert c.mesh.shape == (2, 2, 2)
    assert c.train.remat is True
    assert c.train.optimizer.weight_decay == 0.0 and isinstance(c.train.optimizer.weight_decay, float)


def test_override_of_schema_key_absent_from_file():
    c = config_lib.load_config(EXAMPLE, ["--config.train.grad_clip_norm=0.5"])
    assert c.train.grad_clip_norm == 0.5


@pytest.mark.parametrize(
    "override,needle",
    [
        ("--config.train.batchsize=3", "'train.batchsize'.*did you mean batch_size"),
        ("--config.train.batch_size=abc", r"train.batch_size='abc': expected an int"),
        ("--config.train.remat=maybe", "train.remat='maybe': expected a bool"),
        ("--config.nosuch.x=1", "unknown section 'nosuch'"),
        ("--config.train.optimizer.name=sgdx", "train.optimizer.name = 'sgdx'"),
        ("--config.train.grad_accum_steps=3", "train.batch_size = 8 is not divisible by train.grad_accum_steps = 3"),
        ("--config.mesh.shape=(4,4,4)", r"mesh.shape \(4, 4, 4\) needs 64 devices but there are 8"),
        ("--config.mesh.shape=(-1,-1,1)", "more than one -1"),
        ("--config.train", "not of the form"),
        ("--config.train.batch_size=12", r"train.batch_size = 12 does not split over the 8 batch shards of mesh "
                                         r"\{'data': 8, 'fsdp': 1, 'model': 1\}: use a multiple of 8"),
        ("--config.train.optimizer.lr=nan", "'train.optimizer.lr' = nan is not a number"),
    ],
)
def test_validation_errors_name_the_key(override, needle):
    with pytest.raises(ConfigError, match=needle):
        config_lib.load_config(EXAMPLE, [override])


def test_microbatches_must_split_over_the_batch_shards():
    with pytest.raises(ConfigError, match=r"train.batch_size = 16 \(microbatches of 4\) does not split over the 8"):
        config_lib.load_config(EXAMPLE, ["--config.train.batch_size=16", "--config.train.grad_accum_steps=4"])
    ok = config_lib.load_config(EXAMPLE, ["--config.train.batch_size=16", "--config.train.grad_accum_steps=4",
                                          "--config.mesh.shape=(2,1,4)"])  # batch -> (data, fsdp): 2 shards
    assert ok.train.batch_size == 16 and ok.train.grad_accum_steps == 4 and tuple(ok.mesh.shape) == (2, 1, 4)


def _write(tmp_path, body):
    p = tmp_path / "c.py"
    p.write_text(textwrap.dedent(body))
    return str(p)


def test_unknown_and_mistyped_keys_in_file_are_all_reported(tmp_path):
    path = _write(tmp_path, """
        from ml_collections import ConfigDict
        def get_config(arg=None):
            c = ConfigDict()
            c.train = ConfigDict({"batch_size": "eight", "bogus": 1})
            c.mesh = ConfigDict({"axes": ("data",), "shape": (-1,), "logical_rules": (("batch", "dta"),)})
            c.extra = 3
            return c
    """)
    with pytest.raises(ConfigError) as e:
        config_lib.load_config(path)
    msg = str(e.value)
    assert "'train.batch_size' = 'eight' has type str, expected int" in msg
    assert "unknown key 'train.bogus'" in msg
    assert "unknown key 'extra'" in msg


def test_mesh_rule_to_missing_axis(tmp_path):
    path = _write(tmp_path, """
        from ml_collections import ConfigDict
        def get_config(arg=None):
            c = ConfigDict()
            c.mesh = ConfigDict({"axes": ("data",), "shape": (-1,), "logical_rules": (("batch", "dta"),)})
            return c
    """)
    with pytest.raises(ConfigError, match="'batch' -> 'dta', but mesh.axes is"):
        config_lib.load_config(path)


def test_missing_file_and_missing_get_config(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        config_lib.load_config(str(tmp_path / "nope.py"))
    with pytest.raises(ConfigError, match="no get_config"):
        config_lib.load_config(_write(tmp_path, "x = 1\n"))


def test_split_config_args_and_diff():
    ov, rest = config_lib.split_config_args(["--config", "a.py", "--config.train.batch_size", "4", "--workdir=x"])
    assert ov == ["--config.train.batch_size=4"] and rest == ["--config", "a.py", "--workdir=x"]
    a = config_lib.load_config(EXAMPLE)
    b = config_lib.load_config(EXAMPLE, ["--config.train.batch_size=16"])
    assert config_lib.diff(a, b) == ["train.batch_size: 8 != 16"]


def test_cli_config_command(capsys):
    from dalle import cli

    assert cli.main(["config", "--config", EXAMPLE, "--config.train.num_steps=7"]) == 0
    assert '"num_steps": 7' in capsys.readouterr().out
    assert cli.main(["config", "--config", EXAMPLE, "--config.train.num_stepz=7"]) == 2
    assert "num_stepz" in capsys.readouterr().err


def test_variant_and_root():
    assert config_lib.variant_and_root(None, ("a", "b")) == ("a", "outputs/demo")
    assert config_lib.variant_and_root("b,root=/x", ("a", "b")) == ("b", "/x")
    with pytest.raises(ValueError, match="unknown variant 'c'"):
        config_lib.variant_and_root("c", ("a", "b"))
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['size'\]"):
        config_lib.variant_and_root("a,size=3", ("a", "b"))


def _model_errors(model: dict) -> str:
    with pytest.raises(ConfigError) as e:
        config_lib.validate(config_lib.ConfigDict({"model": model}))
    return str(e.value)


def test_model_sizes_have_no_silent_default():
    from dalle.modeling import model as model_lib
    from dalle.modeling import presets, schema

    micro = presets.micro().to_dict()
    for key in schema.DALLE_BART_SIZE_KEYS:
        forgot = {k: v for k, v in micro.items() if k != key}
        assert f"model.{key} is required" in _model_errors(forgot)
        with pytest.raises(ConfigError, match=f"model.{key} is required"):
            model_lib.complete_config(config_lib.ConfigDict(forgot))
    msg = _model_errors({"kind": "decoder_only", "d_model": 64})
    for key in set(schema.DECODER_ONLY_SIZE_KEYS) - {"d_model"}:
        assert f"model.{key} is required" in msg
    assert "model.d_model is" not in msg
    assert "model.num_heads = -2 must be positive" in _model_errors(
        dict(presets.tiny_decoder_only().to_dict(), num_heads=-2))


def test_real_data_image_size_is_required_but_shapes_keeps_its_default():
    with pytest.raises(ConfigError, match="data.image_size is required for data.source = 'folder'"):
        config_lib.validate(config_lib.ConfigDict({"data": {"source": "folder"}}))
    assert config_lib.validate(config_lib.ConfigDict({"data": {"source": "folder", "image_size": 128}})
                               ).data.image_size == 128
    assert config_lib.validate(config_lib.ConfigDict({"data": {"source": "shapes"}})).data.image_size == 32
    c = config_lib.load_config("configs/real_data.py:csv", ["--config.data.image_size=64"])
    assert c.data.image_size == 64


def test_packaged_configs_load_by_name_from_any_directory(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # outside the checkout: configs/ is not here
    by_name = config_lib.load_config("shapes_tiny:multi")
    assert by_name.name == "shapes_tiny_multi"
    assert config_lib.load_config("configs/shapes_tiny.py:multi").name == "shapes_tiny_multi"  # pipeline-style path
    assert config_lib.load_config("eval/shapes").eval
    with pytest.raises(ConfigError, match="'shapes_tny' is neither a file nor a packaged config name; did you mean "
                                          "shapes_tiny"):
        config_lib.load_config("shapes_tny")
    names = dict(config_lib.list_configs())
    assert "shapes_tiny" in names and "eval/shapes" in names and "model_presets" in names
    assert names["shapes_tiny"].startswith("A text-to-image model")
    from dalle import cli

    assert cli.main(["config", "list"]) == 0 and "eval/emoji" in capsys.readouterr().out
    assert cli.main(["--version"]) == 0
    from dalle import __version__

    assert capsys.readouterr().out.strip() == f"dalle {__version__}"


def test_a_missing_optional_package_names_its_extra(monkeypatch, capsys):
    import builtins

    from dalle import cli

    real_import = builtins.__import__

    def no_starlette(name, *args, **kwargs):
        if name.split(".")[0] == "starlette":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return real_import(name, *args, **kwargs)

    for mod in [m for m in list(__import__("sys").modules) if m.startswith(("dalle.serve", "starlette"))]:
        monkeypatch.delitem(__import__("sys").modules, mod)
    monkeypatch.setattr(builtins, "__import__", no_starlette)
    assert cli.main(["serve", "--help"]) == 2
    assert "needs the optional package 'starlette': pip install 'dalle[serve]'" in capsys.readouterr().err


def test_shapes_tiny_dvae_variants_train_over_dvae_codes_beside_the_vqgan_ones():
    from dalle import demo

    for variant, kind, multi in (("dvae", "decoder_only", False), ("multi_dalle_bart_dvae", "dalle_bart", True)):
        c = config_lib.load_config(f"configs/shapes_tiny.py:{variant},root=/r", [])
        assert (c.model.kind, c.model.image_vocab_size, c.data.image_tokenizer) == (kind, 512, "dvae")
        assert (c.data.encoded_dir, c.data.vqgan_checkpoint) == ("/r/encoded_dvae", "/r/dvae/model")
        assert (c.data.max_objects == 3) == multi
        recipe = demo.pipeline_of(f"configs/shapes_tiny.py:{variant},root=/r")
        assert recipe["vqgan"][0] == "configs/dvae_shapes.py" and recipe["workdir"] == "dalle_dvae"
        assert f"--config.data.max_objects={3 if multi else 1}" in recipe["vqgan"][1]  # the world's images
        # the multi-object world's eval adds the relations split
        assert recipe["eval"] == f"configs/eval/shapes.py:{'multi,' if multi else ''}root=/r"
    bart = config_lib.load_config("configs/shapes_tiny.py:multi_dalle_bart,root=/r", [])
    assert (bart.data.image_tokenizer, bart.model.image_vocab_size) == ("", 2048)


def test_shapes_tiny_vqgan_codebook_matches_the_model_vocabulary():
    """The VQGAN stage trains the codebook the model's vocabulary expects: 512 codes for one object, 2048 multi; the
    multi-object world's VQGAN weighs object pixels more."""
    from dalle import demo

    for variant, codes in (("decoder_only", 512), ("dalle_bart", 512), ("multi", 2048), ("multi_dalle_bart", 2048)):
        c = config_lib.load_config(f"configs/shapes_tiny.py:{variant},root=/r", [])
        recipe = demo.pipeline_of(f"configs/shapes_tiny.py:{variant},root=/r")
        vqgan = config_lib.load_config(recipe["vqgan"][0], recipe["vqgan"][1])
        assert c.model.image_vocab_size == vqgan.model.n_embed == codes, variant
        # the multi-object world's small shapes get a heavier foreground weight than the VQGAN config's default
        default = config_lib.load_config(recipe["vqgan"][0], []).vqgan_loss.foreground_weight
        multi = variant.startswith("multi")
        assert (vqgan.vqgan_loss.foreground_weight > default) if multi else (
            vqgan.vqgan_loss.foreground_weight == default), variant
