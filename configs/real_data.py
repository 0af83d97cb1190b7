"""Data-only configs for images users bring (dalle/data/builders/*): build, train a tokenizer, pre-encode.

    dalle data --config configs/real_data.py:folder --config.data.path=/photos --config.data.data_dir=/tmp/tfds
    dalle tokenizer train --config configs/real_data.py:folder --config.data.data_dir=/tmp/tfds \\
        --config.data.tokenizer_path=/tmp/tok/photos.model
    dalle encode --config configs/real_data.py:folder --config.data.data_dir=/tmp/tfds \\
        --config.data.vqgan_checkpoint=/ckpt/vqgan_f16_16384 --config.data.encoded_dir=/data/photos_f16

Variants (data.source): folder (images + same-stem .txt), csv (path,caption CSV/TSV), webdataset (img2dataset
.tar shards), parquet (img2dataset / HF parquet), cc_tsv (CC3M/CC12M url+caption TSV + data.images_dir),
yfcc100m (OpenAI's CLIP YFCC100M subset list as data.path + the 25-column metadata TSV as data.yfcc_metadata +
data.images_dir; data.yfcc_image_naming = photo_id | hash | basename says how the images are named):

    dalle data --config configs/real_data.py:yfcc100m --config.data.path=/yfcc/yfcc100m_subset_data.tsv \\
        --config.data.yfcc_metadata=/yfcc/yfcc100m_dataset --config.data.images_dir=/yfcc/images \\
        --config.data.data_dir=/tmp/tfds

Defaults follow dalle-mini: 256 px, 64 text tokens, lowercased captions, blank_caption_prob 0.1.
"""

from ml_collections import ConfigDict

VARIANTS = ("folder", "csv", "webdataset", "parquet", "cc_tsv", "yfcc100m")


def data_config(arg=None) -> ConfigDict:
    arg = arg or "folder"
    if arg not in VARIANTS:
        raise ValueError(f"unknown variant {arg!r} (known: {', '.join(VARIANTS)})")
    d = ConfigDict()
    d.source = arg
    d.path = ""  # set on the command line
    d.image_size = 256
    d.max_text_length = 64
    d.vocab_size = 16384
    d.blank_caption_prob = 0.1
    d.validation_fraction = 0.01
    d.encode_batch_size = 64
    d.examples_per_shard = 8192
    if arg in ("cc_tsv", "yfcc100m"):
        d.images_dir = ""  # set on the command line
    if arg == "yfcc100m":
        d.yfcc_metadata = ""  # set on the command line
    return d


def get_config(arg=None):
    c = ConfigDict()
    c.name = f"real_data_{arg or 'folder'}"
    c.data = data_config(arg)
    return c
