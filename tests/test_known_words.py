"""data.unknown_words = "drop" (dalle/tokenizers/known_words.py): unknown words left out, the same way in training,
prompts and the reranking CLIP."""

from __future__ import annotations

import numpy as np
import pytest
import seqio
import tensorflow as tf

from dalle import config as config_lib
from dalle.data import tasks
from dalle.tokenizers import known_words
from dalle.tokenizers import sentencepiece as tokenizer
from tests import data_helpers


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    """Tiny shapes data with a word-level vocabulary (every training caption word known)."""
    return data_helpers.build_tokenized_encoded_shapes(str(tmp_path_factory.mktemp("known")),
                                                       tokenizer_model_type="word", vocab_size=200,
                                                       max_text_length=40)


def test_unknown_words_are_split_then_dropped(config):
    vocab = tokenizer.load_vocabulary(config.data.tokenizer_path, "drop")
    base = tokenizer.load_vocabulary(config.data.tokenizer_path)
    assert isinstance(vocab, known_words.KnownWordsVocabulary) and base.unk_id is not None
    for w in ("a", "red", "star", "the", "right,"):  # the word vocabulary learned "right," from the captions
        assert vocab.is_known(w)
    for w in ("please", "red,", "top-left", "xqzv"):
        assert not vocab.is_known(w)
    assert vocab.known_text("please draw a red, star for me") == "a red star"
    assert vocab.known_text("a star in the top-left") == "a star in the top left"
    assert vocab.known_text("a star on the right, please") == "a star on the right,"
    assert vocab.known_text("a star at the top-right, please") == "a star at the top right,"  # keeps "right,"
    assert vocab.known_text("xqzv ,,, !!") == ""
    # ids: the known words' ids under the base vocabulary; never <unk>
    ids = list(vocab.encode("please draw a red star"))
    assert ids == list(base.encode("a red star")) and base.unk_id not in ids
    assert base.unk_id in list(base.encode("please draw a red star"))
    # the tf.data side gives the same ids (training tokenizes through encode_tf)
    np.testing.assert_array_equal(vocab.encode_tf(tf.constant("please draw a red star")).numpy(), ids)
    assert vocab.eos_id == base.eos_id and vocab.vocab_size == base.vocab_size and vocab.pad_id == 0
    assert vocab.decode(ids) == base.decode(ids)
    assert tokenizer.load_vocabulary(config.data.tokenizer_path, "keep") == base


def test_policy_is_checked_by_name(config):
    with pytest.raises(ValueError, match=r"data.unknown_words = 'skip' is not one of keep, drop"):
        known_words.with_policy(tokenizer.load_vocabulary(config.data.tokenizer_path), "skip")
    data = config.data.copy_and_resolve_references()
    data.unknown_words = "skip"
    with pytest.raises(config_lib.ConfigError, match=r"data.unknown_words = 'skip'"):
        config_lib.validate(config_lib.ConfigDict({"data": data.to_dict()}))


def _train_tokens(data, name: str) -> np.ndarray:
    data.task_name = name
    names = tasks.register_tasks(data, raw=False)
    lengths = tasks.sequence_lengths(data, 64)
    ds = seqio.get_mixture_or_task(names.train).get_dataset(lengths, split="train", shuffle=False, seed=1,
                                                           num_epochs=1)
    ds = tasks.feature_converter_for("encdec")(ds, lengths)
    return next(ds.batch(32).as_numpy_iterator())["text_tokens"]


def test_training_drops_the_made_up_words_of_caption_noise(config):
    """With a made-up word in every caption, "keep" trains on <unk> and "drop" on the clean caption: the same
    tokens as the noiseless stream, so a model trained on clean captions is the same model under either policy."""
    unk = tokenizer.load_vocabulary(config.data.tokenizer_path).unk_id
    clean = _train_tokens(config.data.copy_and_resolve_references(), "dalle_known_clean")
    noisy = config.data.copy_and_resolve_references()
    noisy.caption_unknown_word_prob = 1.0
    kept = _train_tokens(noisy.copy_and_resolve_references(), "dalle_known_keep")
    noisy.unknown_words = "drop"
    dropped = _train_tokens(noisy, "dalle_known_drop")
    assert np.all(np.sum(kept == unk, axis=1) == 1)
    np.testing.assert_array_equal(dropped, clean)
    only_policy = config.data.copy_and_resolve_references()
    only_policy.unknown_words = "drop"
    assert tasks.fingerprint(only_policy) != tasks.fingerprint(config.data)  # a resumed stream must match it


def test_prompts_read_as_training_does(config, monkeypatch):
    """The Generator leaves unknown words out of a prompt as training would, and refuses a prompt with no known
    word (it would draw unconditionally) naming the setting."""
    import types

    from dalle import generation
    from dalle.modeling import model as model_lib
    from dalle.modeling import presets

    m = presets.tiny_decoder_only(text_vocab_size=200, image_vocab_size=64, max_text_length=40, image_length=64)
    data = config.data.copy_and_resolve_references()
    data.unknown_words = "drop"
    cfg = config_lib.ConfigDict({"model": m.to_dict(), "data": data.to_dict()})
    params = model_lib.random_params(model_lib.build_model(m), seed=0)
    fake_vqgan = types.SimpleNamespace(codebook_size=64, tokens_per_side=8)
    monkeypatch.setattr(generation, "image_tokenizer", lambda path, *_: fake_vqgan)
    gen = generation.Generator.from_parts(cfg, params, vqgan_checkpoint="fake")  # the model's own setting
    vocab = tokenizer.load_vocabulary(data.tokenizer_path)
    got = gen.tokenize(["please draw a red star for me", "a star in the top-left"]).tokens
    want = tasks.encode_captions(["a red star", "a star in the top left"], vocab, 40)
    np.testing.assert_array_equal(got, want)
    with pytest.raises(generation.GenerationError, match=r"prompt 2 \('xqzv please'\) has no word the model's "
                                                         r"vocabulary knows.*data.unknown_words = 'drop'"):
        gen.tokenize(["a red star", "xqzv please"])


def test_the_gan_reads_prompts_the_same_way(config):
    from dalle import generation
    from dalle.modeling.gan import text as gan_text

    data = config.data.copy_and_resolve_references()
    data.unknown_words = "drop"
    tok = gan_text.CaptionTokenizer.from_config(config_lib.ConfigDict({"data": data.to_dict(),
                                                                       "model": {"context_length": 40}}))
    keep = gan_text.CaptionTokenizer.from_config(config_lib.ConfigDict({"data": config.data.to_dict(),
                                                                        "model": {"context_length": 40}}))
    np.testing.assert_array_equal(tok.prompts(["please draw a red star"]), keep.prompts(["a red star"]))
    with pytest.raises(generation.GenerationError, match="prompt 1 .*has no word the model's vocabulary knows"):
        tok.prompts(["xqzv please"])


def test_the_reranking_clip_reads_captions_the_same_way(config, tmp_path):
    """A saved CLIP reads captions by its own data.unknown_words, or by the image model's when the caller passes
    it (a CLIP trained before the setting existed, ranking for a model that drops unknown words)."""
    import jax

    from dalle import model_dir
    from dalle.modeling.clip import model as clip_lib
    from dalle.modeling.clip import schema as clip_schema

    path = config.data.tokenizer_path
    keep = clip_lib.make_tokenizer({"context_length": 40, "tokenizer_path": path})
    assert not np.array_equal(keep(["please draw a red star"]), keep(["a red star"]))
    cfg = clip_schema.clip_defaults()
    cfg.update(dict(embed_dim=8, image_size=32, patch_size=8, vision_width=16, vision_layers=1, vision_heads=2,
                    vision_mlp_dim=32, context_length=40, vocab_size=200, text_width=16, text_layers=1, text_heads=2,
                    text_mlp_dim=32, text_pool="eos", eos_id=tokenizer.EOS_ID))
    clip = clip_lib.CLIP(cfg.to_dict())
    params = clip.init(jax.random.PRNGKey(0))
    d = model_dir.save_model(str(tmp_path / "clip"), params,
                             config_lib.ConfigDict({"model": cfg.to_dict(), "data": config.data.to_dict()}))
    saved_keep = clip_lib.load_clip(d, path)
    np.testing.assert_array_equal(saved_keep.tokenize(["please draw a red star"]), keep(["please draw a red star"]))
    overridden = clip_lib.load_clip(d, path, unknown_words="drop")
    np.testing.assert_array_equal(overridden.tokenize(["please draw a red star"]), keep(["a red star"]))
