"""dalle/tokenizers/clip_bpe.py: OpenAI CLIP's BPE."""

from __future__ import annotations

from dalle.tokenizers.clip_bpe import OpenAIBPETokenizer


def test_openai_bpe_tokenizer(tmp_path):
    """A tiny merges file in OpenAI's format: words merge by rank, SOT/EOT wrap, padding with 0."""
    import gzip

    path = tmp_path / "bpe.txt.gz"
    merges = ["#version: 0.2", "r e", "re d</w>", "c a", "ca t</w>"]
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("\n".join(merges) + "\n")
    tok = OpenAIBPETokenizer(str(path), context_length=6)
    ids = tok(["Red cat", "red"])
    enc = tok.encoder
    assert list(ids[0]) == [tok.sot, enc["red</w>"], enc["cat</w>"], tok.eot, 0, 0]
    assert list(ids[1][:3]) == [tok.sot, enc["red</w>"], tok.eot]
    assert tok.eot == max(enc.values())  # argmax pooling relies on EOT being the largest id
