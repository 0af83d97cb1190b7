"""Golden fixtures from OpenAI's `dall-e` package (PyPI `dall-e==0.1`): a tiny random-weight `dall_e.Encoder` and
`dall_e.Decoder`, their state dicts, an input and their outputs, in tests/fixtures/dvae/{encoder,decoder}.npz
(read by tests/test_dvae.py, and a folder `dalle convert dvae --from` accepts as it is).

Needs the reference set (`make setup-ref`: torch, and dall-e installed with --no-deps). From the repo root:

    .venv/bin/python tools/make_dvae_fixtures.py

The modules are `dall-e`'s own classes at sizes below their attrs validators' minimums (n_hid >= 64, vocab_size
>= 512, which would make ~5 MB of weights): the validators are switched off while building, the computation is
untouched. Biases, zero at `dall-e`'s init, are drawn too so that every parameter is tested, and the encoder's
last conv is centred on the inputs (`spread_codes`) so that the argmax codes vary over the image.

encoder.npz: `sd/<state-dict key>` (torch layout), `image` [B, H, W, 3] in [0, 1], `logits` [B, h, w, vocab] of
`Encoder(map_pixels(image))`, `codes` their argmax. decoder.npz: `sd/<key>`, `codes`, `stats` [B, H, W, 6] of
`Decoder(one_hot(codes))`, `relaxed` [B, h, w, vocab] (a Gumbel-softmax sample) and `relaxed_stats` of it.
Arrays are NHWC, the layout of this project.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
OUT = os.path.join(ROOT, "tests", "fixtures", "dvae")

# The fixture's architecture (4 groups, as `dall-e` hard-codes) and inputs.
TINY = dict(n_hid=8, n_blk_per_group=1, vocab_size=32, n_init=8)
BATCH, SIDE = 2, 32


def build_reference(n_hid: int, n_blk_per_group: int, vocab_size: int, n_init: int, seed: int = 0,
                    bias_std: float = 0.3) -> tuple[Any, Any]:
    """(dall_e.Encoder, dall_e.Decoder) in eval mode with `dall-e`'s weight init and random biases; any sizes (the
    attrs validators are off while they are built)."""
    import attr
    import torch
    from dall_e import Decoder, Encoder

    torch.manual_seed(seed)
    with attr.validators.disabled():
        enc = Encoder(n_hid=n_hid, n_blk_per_group=n_blk_per_group, vocab_size=vocab_size).eval()
        dec = Decoder(n_init=n_init, n_hid=n_hid, n_blk_per_group=n_blk_per_group, vocab_size=vocab_size).eval()
    with torch.no_grad():
        for p in list(enc.parameters()) + list(dec.parameters()):
            if p.ndim == 1:
                p.normal_(0.0, bias_std)
    return enc, dec


def spread_codes(enc: Any, images: np.ndarray, gain: float = 10.0, seed: int = 0) -> None:
    """Re-biases the encoder's last conv so that its logits are centred over `images` (NHWC, [0, 1]), then scales
    that conv by `gain`. Random ReLU features share one large mean direction, so raw random logits pick the same
    code or two everywhere; centred, the argmax follows the image and the codes spread over the vocabulary."""
    import torch
    from dall_e import map_pixels

    conv = enc.blocks.output.conv
    seen = []
    hook = conv.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0]))
    with torch.no_grad():
        enc(map_pixels(torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))).float()))
        hook.remove()
        mean = seen[0].mean(dim=(0, 2, 3))
        noise = torch.randn(conv.b.shape, generator=torch.Generator().manual_seed(seed))
        conv.b.copy_(gain * (0.01 * noise - conv.w[:, :, 0, 0] @ mean))
        conv.w.mul_(gain)


def run_reference(enc: Any, dec: Any, images: np.ndarray, seed: int = 1) -> dict[str, np.ndarray]:
    """The reference outputs (NHWC numpy) for NHWC images in [0, 1]: logits, codes, decoder stats of the one-hot
    codes, a relaxed sample and its stats."""
    import torch
    import torch.nn.functional as F
    from dall_e import map_pixels

    x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))).float()
    with torch.no_grad():
        logits = enc(map_pixels(x))
        codes = torch.argmax(logits, dim=1)
        one_hot = F.one_hot(codes, num_classes=enc.vocab_size).permute(0, 3, 1, 2).float()
        stats = dec(one_hot)
        g = torch.Generator().manual_seed(seed)
        gumbel = -torch.log(-torch.log(torch.rand(logits.shape, generator=g).clamp_min(1e-20)))
        relaxed = torch.softmax((logits + gumbel) / 0.5, dim=1)
        relaxed_stats = dec(relaxed)

    def nhwc(t):
        return t.permute(0, 2, 3, 1).numpy().astype(np.float32)

    return {"logits": nhwc(logits), "codes": codes.numpy().astype(np.int32), "stats": nhwc(stats),
            "relaxed": nhwc(relaxed), "relaxed_stats": nhwc(relaxed_stats)}


def state_dict_arrays(module: Any) -> dict[str, np.ndarray]:
    return {f"sd/{k}": v.detach().numpy().astype(np.float32) for k, v in module.state_dict().items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=OUT, help="output folder")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    enc, dec = build_reference(**TINY, seed=args.seed)
    images = np.random.default_rng(args.seed).random((BATCH, SIDE, SIDE, 3), dtype=np.float32)
    spread_codes(enc, images, seed=args.seed)
    ref = run_reference(enc, dec, images)
    # Argmax codes are compared exactly: refuse a draw whose top two logits are nearly tied anywhere.
    top2 = np.sort(ref["logits"], axis=-1)[..., -2:]
    margin = float(np.min(top2[..., 1] - top2[..., 0]))
    if margin < 1e-3 or len(np.unique(ref["codes"])) < TINY["vocab_size"] // 4:
        raise SystemExit(f"the top two logits are within {margin:.2g} somewhere, or few codes are used; pick "
                         "another --seed")
    os.makedirs(args.out, exist_ok=True)
    np.savez_compressed(os.path.join(args.out, "encoder.npz"), **state_dict_arrays(enc), image=images,
                        logits=ref["logits"], codes=ref["codes"])
    np.savez_compressed(os.path.join(args.out, "decoder.npz"), **state_dict_arrays(dec), codes=ref["codes"],
                        stats=ref["stats"], relaxed=ref["relaxed"], relaxed_stats=ref["relaxed_stats"])
    size = sum(os.path.getsize(os.path.join(args.out, f)) for f in ("encoder.npz", "decoder.npz"))
    print(f"wrote {args.out}/encoder.npz, decoder.npz ({size / 1024:.0f} KiB; smallest top-2 logit margin "
          f"{margin:.3g}; codes used {len(np.unique(ref['codes']))} of {TINY['vocab_size']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
