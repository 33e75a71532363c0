"""DelpNet: model, safetensors weights, defocus_map geometry and the shipped weights (fast)."""

from __future__ import annotations

import glob
import os
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from napari_refocus.methods.defocus import DefocusMap, defocus_map, iter_defocus_map  # noqa: E402
from napari_refocus.models.delpnet import PAPER_WIDTH, DelpNet, n_parameters  # noqa: E402
from napari_refocus.models.loader import load_model, read_metadata, save_weights, weights_hash  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "weights" / "delpnet.safetensors"
DATA = Path(os.environ.get("NAPARI_REFOCUS_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    torch.manual_seed(0)
    model = DelpNet(width=4).eval()
    path = tmp_path_factory.mktemp("w") / "tiny.safetensors"
    save_weights(model, path, meta={"optics": {"wavelength_nm": 451.0}, "normalisation": {"value": 65535}})
    return path


def test_paper_config_shape_and_parameters():
    model = DelpNet(width=PAPER_WIDTH).eval()
    n = n_parameters(model)
    assert 2.2e6 <= n <= 2.45e6, n  # the paper's "about 2.3 M"
    bn = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(bn) == 7 and all(abs(m.momentum - 0.4) < 1e-9 for m in bn)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 7
    with torch.no_grad():
        out = model(torch.rand(2, 1, 84, 84))
    assert out.shape == (2, 12) and out.dtype == torch.float32


def test_safetensors_round_trip(tiny_weights, tmp_path):
    meta = read_metadata(tiny_weights)
    assert meta["architecture"] == "DelpNet" and meta["kwargs"]["width"] == 4
    assert meta["normalisation"]["value"] == 65535
    model = load_model(str(tiny_weights), "cpu")
    ref = DelpNet(width=4).eval()
    from safetensors.torch import load_file

    ref.load_state_dict(load_file(str(tiny_weights)))
    x = torch.rand(3, 1, 84, 84)
    with torch.no_grad():
        assert torch.allclose(model(x.contiguous(memory_format=torch.channels_last)), ref(x), atol=1e-5)
    assert len(weights_hash(tiny_weights)) == 64
    # a tampered file is refused, a missing one explained
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(tiny_weights.read_bytes())
    (tmp_path / "bad.sha256").write_text("0" * 64 + "\n")
    with pytest.raises(ValueError, match="SHA-256"):
        load_model(str(bad), "cpu")
    with pytest.raises(FileNotFoundError):
        load_model(str(tmp_path / "missing.safetensors"), "cpu")


def test_truncated_or_pickled_weights_raise_one_line_value_error(tiny_weights, tmp_path):
    """A truncated file, or a pickle (torch.save) renamed .safetensors, is refused (never
    unpickled) with a one-line ValueError naming the file."""
    from napari_refocus.models.loader import load_state

    data = tiny_weights.read_bytes()
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(data[: len(data) // 2])
    pickled = tmp_path / "pickled.safetensors"
    torch.save(DelpNet(width=4).state_dict(), pickled)
    for bad in (truncated, pickled):
        for load in (lambda p: load_model(str(p), "cpu"), load_state, read_metadata):
            with pytest.raises(ValueError) as err:
                load(bad)
            assert str(bad) in str(err.value) and "\n" not in str(err.value)


def test_model_cache_per_device_and_thread_safe(tiny_weights, monkeypatch):
    """One cached instance per (file, device), built once even when threads race, never
    moved in place; any registered architecture loads; duplicate names are refused."""
    from concurrent.futures import ThreadPoolExecutor

    from napari_refocus.models import loader, registry

    loader.clear_cache()
    built = []
    real = loader.load_fresh
    monkeypatch.setattr(loader, "load_fresh", lambda p: built.append(p) or real(p))
    with ThreadPoolExecutor(4) as pool:
        models = list(pool.map(lambda _: load_model(str(tiny_weights), "cpu"), range(8)))
    assert len(built) == 1 and all(m is models[0] for m in models)
    assert models[0].sha256 == weights_hash(tiny_weights) and models[0].weights_file == str(tiny_weights.resolve())
    assert set(registry.architectures()) == {"DelpNet", "ResnetGenerator", "ResNetUNet", "MDeblurGenerator",
                                             "HeadToTailUNet"}
    with pytest.raises(ValueError, match="already registered"):
        registry.register(DelpNet)
    if torch.cuda.is_available():
        gpu = load_model(str(tiny_weights), "cuda")
        assert gpu is not models[0] and next(models[0].parameters()).device.type == "cpu"


@pytest.mark.parametrize("shape", [(100, 130), (84, 84), (520, 696)])
def test_defocus_map_geometry(tiny_weights, shape):
    rng = np.random.default_rng(0)
    img = rng.poisson(200, size=shape).astype(np.uint16)
    dm = defocus_map(img, weights=str(tiny_weights), device="cpu")
    assert isinstance(dm, DefocusMap)
    rows, cols = dm.grid.shape
    assert dm.levels.shape == (rows, cols)
    assert rows == max(1, -(-(shape[0] - 84) // 42) + 1) and cols == max(1, -(-(shape[1] - 84) // 42) + 1)
    assert dm.probabilities.shape == (rows, cols, 12)
    np.testing.assert_allclose(dm.probabilities.sum(-1), 1.0, atol=1e-4)
    assert dm.certainty.shape == (rows, cols)
    assert (dm.certainty >= 0).all() and (dm.certainty <= 1).all()
    assert dm.levels.min() >= 0 and dm.levels.max() <= 11
    table = dm.to_rows()
    assert len(table) == rows * cols
    assert {"row", "col", "y0", "x0", "level", "certainty", "p0", "p10", "pbg"} <= set(table[0])
    score, cert = dm.focus_score_and_certainty()
    assert np.isnan(score) or 0 <= score <= 10
    assert 0 <= cert <= 1


def test_iter_defocus_map_yields_progress(tiny_weights):
    from napari_refocus.core.progress import Progress, drain

    seen = []
    dm = drain(iter_defocus_map(np.full((90, 200), 150, np.uint16), weights=str(tiny_weights),
                                device="cpu", batch_size=2), seen.append)
    assert seen and all(isinstance(p, Progress) for p in seen) and seen[-1].fraction == 1.0
    assert dm.levels.shape == dm.grid.shape


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.zeros((83, 200), np.uint16), "at least 84x84"),
        (np.full((100, 100), np.nan, np.float32), "NaN"),
        (np.zeros((3, 100, 100), np.uint16), "2-D"),
        (np.zeros((0, 0), np.uint16), "empty"),
    ],
)
def test_defocus_map_bad_input(tiny_weights, bad, match):
    with pytest.raises(ValueError, match=match):
        defocus_map(bad, weights=str(tiny_weights), device="cpu")


def test_shipped_weights_level0_vs_level8():
    if not SHIPPED.exists():
        pytest.skip("weights/delpnet.safetensors does not exist yet (train with `napari-refocus train delpnet`)")
    files = sorted(glob.glob(str(DATA / "BBBC006_w2_infocus/examples/bbbc_subset/*p19_s2*.tif")))
    if not files:
        pytest.skip(f"BBBC006 held-out test image not found under {DATA}")
    from napari_refocus import read_image, simulate

    img = read_image(files[0])[0][:260, :348]  # a held-out (test-split) field, never trained on
    for level, ok in ((0, lambda lv: lv <= 1), (8, lambda lv: 7 <= lv <= 9)):
        sim = simulate(img, level=level, noise="poisson", seed=1)
        dm = defocus_map(sim, device="cpu")
        lv = dm.levels[dm.levels != 11]
        assert lv.size > 0
        assert np.mean([ok(v) for v in lv]) >= 0.8, (level, np.bincount(lv, minlength=11))


def test_tta_is_invariant_to_flips_and_rotations(tiny_weights):
    """With test-time augmentation a patch and its mirror/rotation get the same probabilities
    (the 8 views are the same set), and they are a proper distribution."""
    from napari_refocus.core.progress import drain
    from napari_refocus.methods.defocus import iter_patch_probabilities

    model = load_model(str(tiny_weights), "cpu")
    rng = np.random.default_rng(0)
    patches = torch.from_numpy(rng.poisson(800, (5, 84, 84)).astype(np.float32))
    p = drain(iter_patch_probabilities(model, patches, torch.device("cpu"), tta=True))
    for view in (patches.flip(-1), torch.rot90(patches, 1, (-2, -1)), patches.transpose(-2, -1)):
        q = drain(iter_patch_probabilities(model, view.contiguous(), torch.device("cpu"), tta=True))
        np.testing.assert_allclose(q, p, atol=1e-5)
    np.testing.assert_allclose(p.sum(1), 1, atol=1e-5)
    plain = drain(iter_patch_probabilities(model, patches, torch.device("cpu")))
    assert plain.shape == p.shape and not np.allclose(plain, p)


def test_train_delpnet_seeded_and_resumable(tmp_path):
    """The real training entry point on the real sources (tiny net, 2 epochs of 2 steps):
    weights + card + eval JSON; the same command interrupted inside epoch 2 and run again
    resumes from its epoch-1 checkpoint and ends with the SAME weights as an uninterrupted
    run with that seed (so the card's command reproduces them); another seed gives other weights."""
    if not (DATA / "BBBC006_w2_infocus").exists():
        pytest.skip("needs ../shared/data (BBBC006 in-focus fields)")
    from napari_refocus.training.train_delpnet import iter_train_delpnet, train_delpnet
    from napari_refocus.models.loader import load_state

    tiny = dict(width=4, steps_per_epoch=2, batch_size=8, val_per_class=2, test_per_class=2,
                real_check=False, progress=False, device="cpu", num_threads=1)
    rng_state, threads = torch.get_rng_state(), torch.get_num_threads()
    a = train_delpnet(tmp_path / "a", epochs=2, seed=3, **tiny)
    # training leaves the process's random state and thread count as they were
    assert torch.equal(torch.get_rng_state(), rng_state) and torch.get_num_threads() == threads
    # the same command, interrupted during epoch 2 (after epoch 1's checkpoint) ...
    job = iter_train_delpnet(tmp_path / "b", epochs=2, seed=3,
                             **{k: v for k, v in tiny.items() if k != "progress"})
    for p in job:
        if p.stage.startswith("epoch 2/"):
            break
    job.close()
    assert not (tmp_path / "b" / "delpnet.safetensors").exists()
    b = train_delpnet(tmp_path / "b", epochs=2, seed=3, **tiny)  # ... and run again: resumes
    c = train_delpnet(tmp_path / "c", epochs=2, seed=4, **tiny)
    assert [r["epoch"] for r in b["training"]["history"]] == [1, 2]
    # tensors, not file hashes: the metadata holds the (varying) training time
    wa, wb, wc = (load_state(tmp_path / d / "delpnet.safetensors")[0] for d in "abc")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)
    card = (tmp_path / "a" / "delpnet.md").read_text()
    assert "napari-refocus train delpnet --out weights/ --epochs 2 --seed 3 --threads 1" in card
    assert (tmp_path / "a" / "delpnet_eval.json").exists() and (tmp_path / "a" / "delpnet_confusion.png").exists()


def test_a_safetensors_header_length_starting_with_0x80_is_not_taken_for_a_pickle(tmp_path):
    """A pickle starts with byte 0x80; so does a safetensors file whose header is 0x..80 bytes
    long (1 in 256 of them: a DelpNet trained with more metadata hit it). Its plausible length and
    the header's "{" make it safetensors; it loads."""
    from safetensors.torch import load_file, save_file

    from napari_refocus.models.loader import check_file

    path = tmp_path / "w.safetensors"
    for pad in range(300):  # metadata of every length until the header length ends in 0x80
        save_file({"x": torch.zeros(2)}, str(path), metadata={"note": "a" * pad})
        if path.read_bytes()[:1] == b"\x80":
            break
    assert path.read_bytes()[:1] == b"\x80"
    check_file(path)  # raised "is a Python pickle" before
    assert torch.equal(load_file(str(path))["x"], torch.zeros(2))


def test_object_scales_shrink_the_sources_and_keep_the_labels():
    """``object_scales``: every source is also drawn at a fraction of its size (anti-aliased),
    blurred by the same levels; a source too small at a scale keeps its other scales."""
    from napari_refocus.training.delpnet_data import PatchSynth, shrunk

    rng = np.random.default_rng(0)
    big = rng.random((200, 240)).astype(np.float32)
    small = rng.random((120, 130)).astype(np.float32)  # 60 x 65 at half size: too small for a patch
    plain = PatchSynth([big, small])
    scaled = PatchSynth([big, small], object_scales=((1.0, 0.5), (0.5, 0.5)))
    assert [tuple(s.shape[-2:]) for s in plain.stacks] == [(200, 240), (120, 130)]
    assert [tuple(s.shape[-2:]) for s in scaled.stacks] == [(200, 240), (100, 120), (120, 130)]
    assert np.allclose(scaled.weights.numpy(), [0.25, 0.25, 0.5])  # each source keeps its share
    # the same blur of a shrunk source: the reference's levels on the shrunk image
    assert torch.allclose(scaled.stacks[1], PatchSynth([shrunk(big, 0.5)]).stacks[0])
    # anti-aliased: a half-size image is the 2x2 mean within the filter's rounding
    assert abs(float(shrunk(big, 0.5).mean()) - float(big.mean())) < 1e-3
    x, y = scaled.sample(48, torch.Generator().manual_seed(0))
    assert x.shape == (48, 84, 84) and set(y.tolist()) <= set(range(12))


def test_the_card_command_names_a_fine_tune_and_its_data():
    """A card's command is the one that made the weights: the recipe's other settings are flags."""
    from napari_refocus.training.cards import _recipe_flags
    from napari_refocus.training.delpnet_data import OBJECT_SCALES

    assert _recipe_flags({"lr": 3e-3, "psf_model": "paraxial"}) == ""  # the shipped recipe
    ck = {"lr": 1e-3, "psf_model": "exact", "init": "weights/delpnet.safetensors",
          "object_scales": [list(o) for o in OBJECT_SCALES]}
    assert _recipe_flags(ck) == " --psf-model exact --init weights/delpnet.safetensors --lr 0.001 --object-scales"
    assert "Python only" in _recipe_flags({"object_scales": [[1.0, 1.0], [0.3, 1.0]]})
    # the objectives mixture with each class where the start network reads it (--objectives)
    mix = [{"share": 0.5}, {"na": 1.3, "defocus_table_um": [0.0, 0.3], "share": 0.5}]
    assert _recipe_flags({"objectives": mix}) == " --objectives"
    assert _recipe_flags({"objectives": [{"share": 0.5}, {"na": 1.3, "share": 0.5}]}) == ""  # encircled energy
    assert _recipe_flags({"init": "w.safetensors", "lr": 1e-3, "consistency": 1.0}) == (
        " --init w.safetensors --lr 0.001 --consistency 1")
    # the paper-size network on a GPU, its patches drawn by worker processes
    assert _recipe_flags({"width": 64, "device": "cuda", "data_workers": 14, "lr": 3e-3}) == (
        " --width 64 --device cuda --data-workers 14")
    assert _recipe_flags({"width": 64, "precision": "bf16", "num_threads": 2}) == " --width 64 --precision bf16"
    assert _recipe_flags({"width": 16, "device": "auto", "data_workers": 0}) == ""


def test_views_photograph_the_same_crop_with_other_cameras():
    """``sample(views=2)``: each crop twice, by independent cameras (brightness, offset, noise) and
    its own flip; ``views=1`` draws exactly the patches it drew before views existed."""
    from napari_refocus.training.delpnet_data import PatchSynth

    rng = np.random.default_rng(0)
    # a smooth field: two cameras' pictures of one crop differ by an affine map plus noise
    img = np.kron(rng.random((20, 24)), np.ones((10, 10))).astype(np.float32)
    synth = PatchSynth([img])
    x1, y1 = synth.sample(32, torch.Generator().manual_seed(1))
    assert x1.shape == (32, 84, 84) and y1.shape == (32,)
    x, y = synth.sample(32, torch.Generator().manual_seed(1), views=2, classes=torch.zeros(32, dtype=torch.int64))
    assert x.shape == (2, 32, 84, 84) and y.shape == (2, 32)
    assert (y == 0).all()  # level 0 crops with structure stay level 0 in both views
    # the two views of a crop are the same picture up to the camera: after undoing each view's
    # dihedral turn, the best of the 8 is strongly correlated with the other view
    def best_corr(a, b):
        cands = [torch.rot90(b, k, (-2, -1)).flip(-1) if f else torch.rot90(b, k, (-2, -1))
                 for k in range(4) for f in (False, True)]
        return max(float(torch.corrcoef(torch.stack([a.ravel(), c.ravel()]))[0, 1]) for c in cands)

    corr = [best_corr(x[0, i], x[1, i]) for i in range(32)]
    assert np.median(corr) > 0.9
    # other cameras: the views' intensities differ (brightness and offset drawn per view)
    assert float((x[0].mean((-2, -1)) - x[1].mean((-2, -1))).abs().median()) > 1e-4


def test_consistency_loss_is_zero_for_equal_views_and_pulls_views_together():
    """``train_step(consistency=w)``: identical views add nothing; different views' answers move
    towards each other (the KL term's gradient), and a mismatch of labels is not penalised."""
    from napari_refocus.models.delpnet import DelpNet, prepare
    from napari_refocus.training.train_delpnet import train_step

    torch.manual_seed(0)
    model = prepare(DelpNet(width=4, dropout=0.0, head_dropout=0.0), "cpu").eval()
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # no step: only the loss is compared
    x = torch.rand(4, 84, 84) * 0.05
    y = torch.tensor([3, 5, 3, 5])
    same = torch.cat([x, x])
    plain, _ = train_step(model, opt, same, torch.cat([y, y]), "cpu")
    with_kl, _ = train_step(model, opt, same, torch.cat([y, y]), "cpu", consistency=5.0)
    assert with_kl.item() == pytest.approx(plain.item(), abs=1e-6)
    other = torch.cat([x, torch.rand(4, 84, 84) * 0.05])
    plain, _ = train_step(model, opt, other, torch.cat([y, y]), "cpu")
    with_kl, _ = train_step(model, opt, other, torch.cat([y, y]), "cpu", consistency=5.0)
    assert with_kl.item() > plain.item()
    mismatched, _ = train_step(model, opt, other, torch.cat([y, y + 1]), "cpu", consistency=5.0)
    plain_mis, _ = train_step(model, opt, other, torch.cat([y, y + 1]), "cpu")
    assert mismatched.item() == pytest.approx(plain_mis.item(), abs=1e-6)


def test_data_workers_draw_the_same_patches_as_the_loop():
    """``data_workers`` > 0 draws whole epochs in forked processes from each epoch's own stream:
    the same patches, bit for bit, as the training loop draws itself (also with two views)."""
    from napari_refocus.core.optics import Optics
    from napari_refocus.training.delpnet_data import PatchSynth
    from napari_refocus.training.train_delpnet import _epochs_of_patches

    rng = np.random.default_rng(0)
    images = [rng.gamma(2.0, 50.0, (120, 130)).astype(np.float32) for _ in range(2)]
    synth = PatchSynth(images, Optics(psf_model="paraxial"))
    for consistency in (0.0, 1.0):
        kw = dict(seed=5, steps=2, batch_size=6, consistency=consistency)
        here = [list(e) for e in _epochs_of_patches(synth, 1, 4, workers=0, **kw)]
        # one worker: two epochs drawn ahead, the third asked for when the first is taken
        pool = [list(e) for e in _epochs_of_patches(synth, 1, 4, workers=1, **kw)]
        assert len(here) == len(pool) == 3 and all(len(e) == 2 for e in pool)
        for ea, eb in zip(here, pool):
            for (xa, ya), (xb, yb) in zip(ea, eb):
                assert xa.dtype == xb.dtype == torch.float32 and xa.shape == (6, 84, 84)
                assert torch.equal(xa, xb) and torch.equal(ya, yb)
        assert not torch.equal(here[0][0][0], here[1][0][0])  # each epoch its own patches


def test_a_loss_scaler_steps_as_the_plain_loss():
    """float16 training on CUDA scales its loss (``train_step(scaler=...)``); with the scale
    undone before the step, the weights move as without it (here float32 on the CPU)."""
    from napari_refocus.models.delpnet import DelpNet
    from napari_refocus.training.train_delpnet import train_step

    x = torch.rand(8, 84, 84) * 0.02
    y = torch.arange(8) % 12
    nets = []
    for scaler in (None, torch.amp.GradScaler("cpu", init_scale=2.0**12)):
        torch.manual_seed(0)
        net = DelpNet(width=4).eval()  # eval: no dropout, the same function both times
        opt = torch.optim.Adam(net.parameters(), lr=1e-2)
        for _ in range(2):
            train_step(net, opt, x, y, "cpu", scaler=scaler)
        nets.append(net)
    moved = [float((p - q).detach().abs().max()) for p, q in zip(nets[0].parameters(), nets[1].parameters())]
    assert max(moved) < 1e-5
