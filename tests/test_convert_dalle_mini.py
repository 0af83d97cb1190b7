"""dalle-mini weights -> dalle: golden fixtures made by the real dalle-mini package
(tools/make_dalle_mini_fixtures.py), refusal of unsupported switches, and the BART BPE vocabulary."""
# bazel: manual  (heavy: `make test` runs it with pytest; Bazel runs the fast tests)

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dalle.modeling import convert_dalle_mini as conv
from dalle.modeling import model as model_lib
from dalle.modeling import sampling
from tests.published_layouts import CAPTIONS, FIXTURES, load_fixture, write_dalle_mini_dir


def our_text(input_ids, attention_mask):
    """BART ids -> dalle ids (0 <-> 1 swapped, padding 0)."""
    swapped = np.where(input_ids == 0, 1, np.where(input_ids == 1, 0, input_ids))
    return jnp.asarray(swapped * attention_mask, jnp.int32)


def test_fixtures_exist_and_cover_switches_and_layouts():
    names = {os.path.basename(p) for p in FIXTURES}
    assert len(names) >= 3, "run tools/make_dalle_mini_fixtures.py"
    layouts = set()
    for path in FIXTURES:
        _, _, flat = load_fixture(path)
        layouts.add(any("Layers/" in k for k in flat))
    assert layouts == {True, False}  # scanned and unscanned dalle-mini layouts


@pytest.mark.parametrize("path", FIXTURES, ids=[os.path.basename(p)[11:-4] for p in FIXTURES])
def test_golden_logits_and_greedy_decode_match_dalle_mini(path):
    z, config, flat = load_fixture(path)
    cfg, params = conv.convert(config, flat)
    model = model_lib.build_model(cfg)
    text = our_text(z["input_ids"], z["attention_mask"])
    logits = jax.jit(model.full_logits)(params, text, jnp.asarray(z["decoder_input_ids"]))
    np.testing.assert_allclose(np.asarray(logits), z["logits"], atol=1e-4, rtol=0)
    if "greedy" in z.files:
        codes = sampling.generate(model, params, text, jax.random.PRNGKey(0), temperature=0.0)
        np.testing.assert_array_equal(np.asarray(codes), z["greedy"])


def test_cli_roundtrip_and_generation_from_raw_prompts(tmp_path):
    from dalle import convert
    from dalle import model_dir as checkpoint
    from dalle.tokenizers import bart_bpe as bpe_vocab

    path = [p for p in FIXTURES if "normformer" in p][0]
    z, config, flat = load_fixture(path)
    src = tmp_path / "dalle-mini"
    write_dalle_mini_dir(str(src), config, flat)
    bpe_vocab.train_tiny_bpe(CAPTIONS, str(src), vocab_size=300)
    out = tmp_path / "converted"
    assert convert.main(["dalle-mini", "--from", str(src), "--out", str(out), "--weights-only"]) == 0
    saved_config, params = checkpoint.load_model(str(out))
    model = model_lib.build_model(saved_config.model)
    assert model.image_vocab_size == 40 and saved_config.model.image_extra_tokens == 5
    logits = jax.jit(model.full_logits)(params, our_text(z["input_ids"], z["attention_mask"]),
                                        jnp.asarray(z["decoder_input_ids"]))
    np.testing.assert_allclose(np.asarray(logits), z["logits"], atol=1e-4)

    vocab = bpe_vocab.BpeVocabulary(checkpoint.resolve_path(str(out), saved_config.data.tokenizer_path))
    assert vocab.vocab_size <= model.text_vocab_size
    prompts = ["a red circle", "two blue squares", ""]
    tokens = np.zeros((3, model.max_text_length), np.int32)
    for i, p in enumerate(prompts):  # what dalle.data.tasks.encode_captions does: encode, cut, EOS, pad 0
        ids = list(vocab.encode(p))[: model.max_text_length - 1] + [vocab.eos_id]
        tokens[i, : len(ids)] = ids
    assert list(tokens[2, :3]) == [1, 2, 0]  # the empty caption is BART's "<s></s>" (dalle-mini's uncond prompt)
    codes = sampling.generate(model, params, tokens[:2], jax.random.PRNGKey(0), top_k=5, condition_scale=3.0,
                              uncond_tokens=tokens[2:])
    assert codes.shape == (2, model.image_length) and int(codes.max()) < 40


def test_bpe_vocabulary_swaps_pad_and_bos(tmp_path):
    from tokenizers import Tokenizer

    from dalle.tokenizers import bart_bpe as bpe_vocab

    directory = bpe_vocab.train_tiny_bpe(CAPTIONS, str(tmp_path / "tok"), vocab_size=280)
    vocab = bpe_vocab.BpeVocabulary(directory)
    raw = Tokenizer.from_file(os.path.join(directory, "tokenizer.json"))
    text = "a red circle and two blue squares"
    ids = list(vocab.encode(text))
    bart = raw.encode(text, add_special_tokens=False).ids
    assert ids[0] == 1 and ids[1:] == [1 - i if i in (0, 1) else i for i in bart]
    assert all(i >= 4 for i in ids[1:])
    assert vocab.decode(ids + [vocab.eos_id, 0, 0]) == text
    assert (vocab.pad_id, vocab.eos_id, vocab.unk_id) == (0, 2, 3)
    assert vocab.decode(vocab.encode("a yellow star")) == "a yellow star"
    # the vocab.json + merges.txt layout (no tokenizer.json) reads the same
    os.remove(os.path.join(directory, "tokenizer.json"))
    assert list(bpe_vocab.BpeVocabulary(directory).encode(text)) == ids


def test_unsupported_switches_are_refused_by_name():
    _, config, flat = load_fixture([p for p in FIXTURES if "normformer" in p][0])
    with pytest.raises(conv.ConversionError, match="use_alibi"):
        conv.model_config_from_dalle_mini(dict(config, use_alibi=True))
    with pytest.raises(conv.ConversionError, match="tie_word_embeddings"):
        conv.model_config_from_dalle_mini(dict(config, tie_word_embeddings=True))
    with pytest.raises(conv.ConversionError, match="use_rotary_embeddings"):
        conv.model_config_from_dalle_mini(dict(config, use_rotary_embeddings=True))
    with pytest.raises(conv.ConversionError, match="activation_function='mish'"):
        conv.model_config_from_dalle_mini(dict(config, activation_function="mish"))
    # a parameter we do not know (e.g. from a newer dalle-mini) is named, not dropped
    bad = dict(flat)
    bad["model/decoder/layers/FlaxBartDecoderLayers/FlaxBartAttention_0/alibi_slopes"] = np.zeros((2, 2))
    with pytest.raises(conv.ConversionError, match="alibi_slopes"):
        conv.convert(config, bad)
    # a missing one too
    bad = {k: v for k, v in flat.items() if "GLU_0/Dense_1" not in k}
    with pytest.raises(conv.ConversionError, match="Dense_1"):
        conv.convert(config, bad)
    assert conv.main(["--from", "/nonexistent", "--out", "/tmp/x"]) == 2
