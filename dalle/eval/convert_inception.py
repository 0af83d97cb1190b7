"""`dalle convert inception --from pt_inception-2015-12-05-*.pth --out DIR`: the FID network for `dalle eval`.

The weights are pytorch-fid's port of TensorFlow's 2015-12-05 Inception (the network every published FID uses);
they are not downloaded here: fetch `pt_inception-2015-12-05-6726825d.pth` from pytorch-fid's releases yourself.
Every key and shape is checked against dalle/eval/inception.py's table before anything is written.
"""

from __future__ import annotations

import os
import sys
from typing import Sequence

import numpy as np
from ml_collections import ConfigDict

from dalle.cli.args import Parser


def load_torch_state_dict(path: str) -> dict[str, np.ndarray]:
    """pytorch-fid's .pth (or an .npz), read as data only (dalle.weights_files)."""
    from dalle import weights_files

    return weights_files.load_state_dict(path)


def main(argv: Sequence[str]) -> int:
    parser = Parser(prog="dalle convert inception", description=__doc__)
    parser.add_argument("--from", dest="src", required=True, help="pt_inception-2015-12-05-*.pth (or an .npz)")
    parser.add_argument("--out", required=True, help="output model directory")
    args = parser.parse_args(argv)
    from dalle.eval import inception

    try:
        params = inception.from_torch_state_dict(load_torch_state_dict(args.src))
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {args.src}: {e}", file=sys.stderr)
        return 2
    from dalle import model_dir as checkpoint

    config = ConfigDict({"model": {"kind": "fid_inception", "source": os.path.basename(args.src),
                                   "feature_dim": inception.FEATURE_DIM, "input_size": inception.INPUT_SIZE}})
    checkpoint.save_model(args.out, params, config, extra={"converted_from": os.path.abspath(args.src)})
    print(f"wrote {args.out}: FID Inception ({len(params)} convs)")
    return 0
