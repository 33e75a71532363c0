"""BatchNorm (and ReLU) fused into DelpNet's convolutions at load time: the same network."""

import glob
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import napari_refocus as nr
from napari_refocus.models.fusion import ConvReLU, fuse_sequential
from napari_refocus.models.loader import load_fresh, load_model

HELD_OUT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "BBBC006_w2_infocus" / "examples" / "bbbc_subset"


def _trained_like_block():
    torch.manual_seed(0)
    seq = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(inplace=True),
                        nn.Dropout(0.5), nn.Conv2d(8, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(inplace=True))
    for bn in (seq[1], seq[5]):  # statistics and affine terms far from the identity
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.2, 3)
        bn.weight.data.uniform_(0.5, 2)
        bn.bias.data.uniform_(-1, 1)
    return seq.eval()


@pytest.mark.parametrize("fuse_relu", [False, True])
def test_fuse_sequential_computes_the_same_function(fuse_relu):
    seq = _trained_like_block()
    fused = fuse_sequential(seq, fuse_relu=fuse_relu)
    kinds = [type(m) for m in fused]
    assert nn.BatchNorm2d not in kinds and nn.Dropout not in kinds
    if fuse_relu and torch.backends.mkldnn.is_available():
        assert kinds == [ConvReLU, ConvReLU]
    x = torch.rand(5, 3, 17, 19)
    with torch.inference_mode():
        np.testing.assert_allclose(fused(x).numpy(), seq(x).numpy(), rtol=1e-5, atol=1e-5)
    assert isinstance(seq[1], nn.BatchNorm2d)  # the input module is left as it was


def test_loaded_delpnet_is_fused_and_fresh_one_is_not():
    fused = load_model("delpnet", "cpu")
    fresh = load_fresh("delpnet")
    assert fused.fused.startswith("conv+bn")
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in fresh.modules())  # training and export keep BN
    assert fused.sha256 == fresh.sha256


def test_fused_delpnet_logits_and_classes_on_real_patches():
    from napari_refocus.core.tiling import extract_patches, patch_grid
    from napari_refocus.io.samples import infocus_image, real_defocused_image
    from napari_refocus.methods.defocus import SCALE, canonical_image
    from napari_refocus.models.delpnet import to_input

    fused, fresh = load_model("delpnet", "cpu"), load_fresh("delpnet")
    for img in (infocus_image(), real_defocused_image(), nr.simulate(infocus_image(), level=6, seed=1)):
        data, _ = canonical_image(img, 1.0)
        t = torch.from_numpy(np.ascontiguousarray(data))
        x = to_input(extract_patches(t, patch_grid(data.shape), context=0, mode="reflect") / SCALE, "cpu")
        with torch.inference_mode():
            a, b = fused(x), fresh(x)
        assert float((a - b).abs().max()) < 1e-4
        assert torch.equal(a.argmax(1), b.argmax(1))


@pytest.mark.skipif(not HELD_OUT.exists(), reason="shared BBBC006 data not present")
def test_defocus_map_classes_unchanged_on_held_out_fields(monkeypatch):
    import tifffile

    from napari_refocus.methods import defocus

    for field in ("p19_s2", "o24_s2"):
        (path,) = glob.glob(str(HELD_OUT / f"*{field}*"))
        gt = tifffile.imread(path).astype(np.float32)
        for level in (0, 6):
            img = nr.simulate(gt, level=level, seed=level) if level else gt
            new = nr.defocus_map(img, device="cpu")
            with monkeypatch.context() as mp:
                mp.setattr(defocus, "_model", lambda weights, device: load_fresh("delpnet"))
                old = nr.defocus_map(img, device="cpu")
            np.testing.assert_array_equal(new.levels, old.levels)
            np.testing.assert_allclose(new.probabilities, old.probabilities, atol=1e-5)
