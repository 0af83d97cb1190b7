"""dalle.weights_files: foreign weights are read as data; a file that would run code is refused, never executed."""

from __future__ import annotations


import numpy as np
import pytest

from dalle import weights_files

torch = pytest.importorskip("torch")



class Payload:
    """Unpickling this object creates a file: what a malicious checkpoint would do instead."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_npz_and_safe_torch_state_dicts(tmp_path):
    np.savez(tmp_path / "a.npz", **{"w": np.ones((2, 3), np.float32)})
    assert weights_files.load_state_dict(str(tmp_path / "a.npz"))["w"].shape == (2, 3)
    np.savez(tmp_path / "b.npz", **{"sd/x.weight": np.zeros(4)})
    assert list(weights_files.load_state_dict(str(tmp_path / "b.npz"))) == ["x.weight"]
    sd = {"conv.weight": torch.ones(2, 2, dtype=torch.bfloat16), "steps": torch.tensor([3])}
    torch.save({"state_dict": sd, "epoch": 7}, tmp_path / "ckpt.pt")
    got = weights_files.load_state_dict(str(tmp_path / "ckpt.pt"))
    assert got["conv.weight"].dtype == np.float32 and got["steps"].dtype == np.int64
    with pytest.raises(weights_files.ConversionError, match="--from '/no/such.pt' does not exist"):
        weights_files.load_state_dict("/no/such.pt")


def test_a_pickle_that_runs_code_is_refused_and_never_executed(tmp_path):
    marker = tmp_path / "payload-ran"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "callbacks": Payload(str(marker))}, tmp_path / "lightning.ckpt")
    assert not marker.exists()
    with pytest.raises(weights_files.ConversionError, match="not a plain state dict of tensors.*re-save only its"):
        weights_files.load_state_dict(str(tmp_path / "lightning.ckpt"))
    assert not marker.exists()
    from dalle.modeling.vqgan import convert as convert_vqgan

    with pytest.raises(convert_vqgan.ConversionError, match="not a plain state dict"):
        convert_vqgan.load_torch_state_dict(str(tmp_path / "lightning.ckpt"))
    assert not marker.exists()


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(3, 2)

    def forward(self, x):
        return self.proj(x)


def test_torchscript_needs_an_explicit_flag(tmp_path):
    path = str(tmp_path / "ViT-tiny.pt")
    torch.jit.save(torch.jit.script(Tiny()), path)
    assert weights_files.is_torchscript_archive(path)
    with pytest.raises(weights_files.ConversionError, match="TorchScript archive: loading it runs code.*--allow_t"):
        weights_files.load_state_dict(path)
    with pytest.warns(UserWarning, match="executes code"):
        sd = weights_files.load_state_dict(path, allow_torchscript=True)
    assert sd["proj.weight"].shape == (2, 3)
    from dalle.modeling.clip import convert as convert_clip

    assert convert_clip.main(["--from", path, "--out", str(tmp_path / "out")]) == 2
    assert not (tmp_path / "out").exists()


def test_plain_torch_files_are_not_mistaken_for_torchscript(tmp_path):
    torch.save({"w": torch.zeros(1)}, tmp_path / "sd.pt")
    assert not weights_files.is_torchscript_archive(str(tmp_path / "sd.pt"))
