"""Golden fixtures for the evaluation equivalence tests (tests/test_clip.py, tests/test_fid.py).

Why a separate venv: open_clip and pytorch-fid import torchvision, and PyPI's torchvision does not work beside the
torch 2.13 in `.venv`. So the references run once in `.venv-vision` and leave small `.npz` files behind; the tests
then convert and compare in `.venv` without torch-vision installed.

    python3 -m venv .venv-vision
    .venv-vision/bin/pip install -r requirements-ref-vision.txt      # ~5.5 GB, a few minutes (local wheels)
    .venv-vision/bin/python tools/make_eval_fixtures.py              # writes tests/fixtures/{clip,inception}_*.npz

What it writes (all from fixed seeds; random weights, never downloaded ones):
  * clip_openclip_{quickgelu,gelu}.npz: a tiny open_clip ViT CLIP (`open_clip.CLIP`, 32 px, patch 8, width 64,
    2+2 layers) state dict as `sd/<torch key>` arrays, random images (normalized NCHW) and token ids, and
    open_clip's `encode_image`, `encode_text` (unnormalized) and `logits_per_image`.
  * inception_fid.npz: pytorch-fid's `InceptionV3` (the FID network: FIDInceptionA/C/E_1/E_2 patched into
    torchvision's Inception3, 2048-d pool3 at 299 px) with *random* weights. Its state dict is ~95 MB, so it is
    not stored: every tensor is drawn by `random_inception_tensor(seed, key, shape)` below (numpy, seeded by the
    key's name), loaded into torch with `strict=True`; the test draws the same tensors from the same seed over the
    key list of our converter and converts them. Stored: the seed, uint8 input images (299x299, [0,1] after /255),
    the pool3 features, and the 192-d block-1 features.
  * inception_frechet.npz: two feature sets, their means/covariances, pytorch-fid's
    `calculate_frechet_distance` on them (also on a near-singular pair, n < d, which takes its eps path).

This file imports torch only inside `main`, so tests can import `random_inception_tensor` from `.venv`.
"""

from __future__ import annotations

import os
import sys
import zlib

import numpy as np

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "fixtures")
INCEPTION_SEED = 1234

# Tiny open_clip ViT config (kept small so its state dict fits in a fixture < 2 MB).
CLIP_EMBED_DIM = 32
CLIP_VISION = dict(image_size=32, patch_size=8, width=64, layers=2, head_width=32, mlp_ratio=4.0)
CLIP_TEXT = dict(context_length=16, vocab_size=100, width=64, heads=2, layers=2, mlp_ratio=4.0)


def random_inception_tensor(seed: int, key: str, shape: tuple[int, ...]) -> np.ndarray:
    """The random value of one Inception state-dict tensor, a pure function of (seed, key name, shape).

    Scales keep activations O(1) through 90+ conv+BN+ReLU layers: conv weights ~ N(0, 1/fan_in) * 1.4, BN with
    running stats near (0, 1) and gamma near 1, so the comparison is not dominated by overflow or underflow."""
    rng = np.random.default_rng([seed, zlib.crc32(key.encode())])
    if key.endswith("num_batches_tracked"):
        return np.zeros(shape, np.int64)
    if key.endswith("conv.weight"):
        fan_in = int(np.prod(shape[1:]))
        return (rng.standard_normal(shape) * 1.4 / np.sqrt(fan_in)).astype(np.float32)
    if key.endswith("bn.weight"):
        return rng.uniform(0.8, 1.2, shape).astype(np.float32)
    if key.endswith("bn.bias"):
        return (rng.standard_normal(shape) * 0.1).astype(np.float32)
    if key.endswith("bn.running_mean"):
        return (rng.standard_normal(shape) * 0.1).astype(np.float32)
    if key.endswith("bn.running_var"):
        return rng.uniform(0.8, 1.2, shape).astype(np.float32)
    if key.startswith("fc."):
        return (rng.standard_normal(shape) * 0.01).astype(np.float32)
    raise KeyError(f"no random rule for Inception state-dict key {key!r}")


def _clip_fixture(quick_gelu: bool, seed: int) -> dict[str, np.ndarray]:
    import open_clip
    import torch

    torch.manual_seed(seed)
    model = open_clip.CLIP(embed_dim=CLIP_EMBED_DIM, vision_cfg=CLIP_VISION, text_cfg=CLIP_TEXT,
                           quick_gelu=quick_gelu).eval()
    # open_clip zero-inits nothing important, but make every tensor clearly non-trivial (LN params included).
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("logit_scale"):
                continue
            if p.ndim == 1:
                p.add_(0.1 * torch.randn_like(p))
    rng = np.random.default_rng(seed)
    images = rng.standard_normal((3, 3, 32, 32)).astype(np.float32)
    tokens = np.zeros((3, CLIP_TEXT["context_length"]), np.int64)
    for i, n in enumerate((5, 9, 16)):  # EOT (largest id) at position n-1; the last row fills the context
        tokens[i, : n - 1] = rng.integers(1, 98, n - 1)
        tokens[i, n - 1] = 99
    with torch.no_grad():
        img = model.encode_image(torch.from_numpy(images))
        txt = model.encode_text(torch.from_numpy(tokens))
        logits, _ = model.get_logits(torch.from_numpy(images), torch.from_numpy(tokens))
    out = {f"sd/{k}": v.detach().numpy() for k, v in model.state_dict().items()}
    out.update(images_nchw=images, tokens=tokens.astype(np.int32), image_features=img.numpy(),
               text_features=txt.numpy(), logits_per_image=logits.numpy(),
               vision_heads=np.int32(CLIP_VISION["width"] // CLIP_VISION["head_width"]),
               text_heads=np.int32(CLIP_TEXT["heads"]), quick_gelu=np.bool_(quick_gelu))
    return out


def _inception_fixture() -> dict[str, np.ndarray]:
    import torch
    from pytorch_fid.inception import InceptionV3

    torch.manual_seed(0)
    # use_fid_inception=True would download the published weights: build its structure without them.
    import pytorch_fid.inception as pfi

    orig = pfi.load_state_dict_from_url
    pfi.load_state_dict_from_url = lambda *a, **k: None  # noqa: E731 - no download; random weights go in below
    try:
        tv = pfi._inception_v3(num_classes=1008, aux_logits=False, weights=None)
        tv.Mixed_5b = pfi.FIDInceptionA(192, pool_features=32)
        tv.Mixed_5c = pfi.FIDInceptionA(256, pool_features=64)
        tv.Mixed_5d = pfi.FIDInceptionA(288, pool_features=64)
        tv.Mixed_6b = pfi.FIDInceptionC(768, channels_7x7=128)
        tv.Mixed_6c = pfi.FIDInceptionC(768, channels_7x7=160)
        tv.Mixed_6d = pfi.FIDInceptionC(768, channels_7x7=160)
        tv.Mixed_6e = pfi.FIDInceptionC(768, channels_7x7=192)
        tv.Mixed_7b = pfi.FIDInceptionE_1(1280)
        tv.Mixed_7c = pfi.FIDInceptionE_2(2048)
        sd = {k: torch.from_numpy(random_inception_tensor(INCEPTION_SEED, k, tuple(v.shape)))
              for k, v in tv.state_dict().items()}
        tv.load_state_dict(sd, strict=True)  # exactly the keys pt_inception-2015-12-05-*.pth has
        pfi.fid_inception_v3 = lambda: tv  # noqa: E731
        net = InceptionV3(output_blocks=(1, 3), resize_input=True, normalize_input=True).eval()
    finally:
        pfi.load_state_dict_from_url = orig
    rng = np.random.default_rng(7)
    # Smooth-ish random images (a blurred noise field) so the network sees structure, stored as uint8.
    base = rng.uniform(0, 255, (2, 38, 38, 3))
    images = np.stack([np.kron(b, np.ones((8, 8, 1)))[:299, :299] for b in base])
    images = np.clip(images + rng.normal(0, 20, images.shape), 0, 255).astype(np.uint8)
    x = torch.from_numpy(images.astype(np.float32) / 255.0).permute(0, 3, 1, 2)
    with torch.no_grad():
        block1, pool3 = net(x)
    return {"seed": np.int64(INCEPTION_SEED), "images_uint8": images,
            "pool3": pool3[:, :, 0, 0].numpy(), "block1": block1.numpy().transpose(0, 2, 3, 1)[:, ::7, ::7],
            "keys": np.array(sorted(sd)), "shapes": np.array([str(tuple(sd[k].shape)) for k in sorted(sd)])}


def _frechet_fixture() -> dict[str, np.ndarray]:
    from pytorch_fid.fid_score import calculate_frechet_distance

    rng = np.random.default_rng(11)
    d = 16
    a = rng.standard_normal((400, d)) @ rng.standard_normal((d, d)) * 0.5 + 0.3
    b = rng.standard_normal((300, d)) @ rng.standard_normal((d, d)) * 0.4 - 0.2
    out = {"feats_a": a, "feats_b": b}
    for tag, (x, y) in {"full": (a, b), "singular": (a[:10], b[:12])}.items():
        mu1, s1 = x.mean(0), np.cov(x, rowvar=False)
        mu2, s2 = y.mean(0), np.cov(y, rowvar=False)
        out[f"{tag}_value"] = np.float64(calculate_frechet_distance(mu1, s1, mu2, s2))
    return out


def main() -> int:
    os.makedirs(FIXTURES, exist_ok=True)
    jobs = {
        "clip_openclip_quickgelu.npz": lambda: _clip_fixture(True, 0),
        "clip_openclip_gelu.npz": lambda: _clip_fixture(False, 1),
        "inception_fid.npz": _inception_fixture,
        "inception_frechet.npz": _frechet_fixture,
    }
    only = set(sys.argv[1:])
    for name, fn in jobs.items():
        if only and name not in only:
            continue
        data = fn()
        path = os.path.join(FIXTURES, name)
        np.savez_compressed(path, **data)
        print(f"{path}: {os.path.getsize(path) / 1e6:.2f} MB, {len(data)} arrays")
    return 0


if __name__ == "__main__":
    sys.exit(main())
