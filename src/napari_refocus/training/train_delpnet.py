"""Train DelpNet on synthetic defocus patches (see ``delpnet_data``).

``train_delpnet(out_dir, epochs=..., seed=0)`` is what ``napari-refocus train delpnet`` calls.
It writes into ``out_dir``: ``delpnet.safetensors`` (+ ``.sha256``), ``delpnet_eval.json``,
``delpnet_confusion.png`` and the model card ``delpnet.md``; resumable checkpoints go to
``out_dir/checkpoints/`` (safetensors + JSON, never shipped).

Reproducible from ``seed``: the initial weights come from torch's random stream seeded with
``seed``, and epoch ``e`` draws its patches and dropout masks from streams seeded with
``(seed, e)`` (private streams: the process's own random state is left alone), so a resumed
run continues exactly where it stopped (up to floating-point non-determinism of
multi-threaded CPU kernels).
"""

from __future__ import annotations

import collections
import contextlib
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..core.devices import resolve_device
from ..core.optics import Optics
from ..core.progress import Progress, run_with_bar
from ..core.torchstate import torch_threads
from ..models.delpnet import DelpNet, SHIPPED_WIDTH, autocast, prepare, to_input
from ..models.loader import load_fresh, load_state, save_weights
from .cards import write_delpnet_card
from .checkpoints import load_checkpoint, save_checkpoint
from .configs import CLASS_NAMES, DELPNET, NORMALISATION
from .delpnet_data import SHIPPED_GAIN_RANGE, PatchSynth, fixed_set
from .evaluation import evaluate_delpnet, plot_confusion, predict_proba, real_data_check  # noqa: F401 (re-exported)
from .runtime import TorchRNG
from .schedules import FunctionLR, warmup_cosine
from .sources import default_data_root, load_sources, split_sources

NAME = DELPNET


# ---------------------------------------------------------------------------------- training
#: ``precision`` of DelpNet's training: the package's autocast for the device (float16 on CUDA,
#: bf16 on CPUs torch reports as bf16-capable, else float32), bf16 autocast (a CPU with AMX, where
#: torch reports only "AVX512": width 64 steps 2.5x faster here), or float32
PRECISIONS = ("auto", "bf16", "fp32")


def _autocast(device, precision: str):
    dev = torch.device(device)
    if precision == "bf16":
        return torch.autocast(dev.type, dtype=torch.bfloat16)
    if precision == "fp32":
        return contextlib.nullcontext()
    return autocast(dev)


def train_step(model, opt, x, y, device, consistency: float = 0.0, scaler=None, precision: str = "auto"):
    """One Adam step on patches ``x`` (N, 84, 84, counts / 65535) with labels ``y``;
    returns ``(loss, logits)``.

    ``scaler``: a ``torch.amp.GradScaler`` for float16 autocast (CUDA), whose small gradients
    would otherwise round to zero; None (the CPU: float32 or bf16) steps the plain loss.

    ``consistency`` > 0: ``x`` holds two views of the same N/2 crops (``x[:N/2]`` and
    ``x[N/2:]``, other cameras) and the symmetric KL divergence between the two views' answers,
    where their labels agree, is added with this weight: the class should follow the blur, not
    the shot noise (issue "any objective": the same field at another exposure gives the same map)."""
    with _autocast(device, precision):
        logits = model(to_input(x, device))
    logits = logits.float()
    loss = F.cross_entropy(logits, y)
    if consistency:
        half = logits.shape[0] // 2
        la, lb = F.log_softmax(logits[:half], 1), F.log_softmax(logits[half:], 1)
        same = (y[:half] == y[half:]).float()
        sym_kl = 0.5 * ((la.exp() * (la - lb)).sum(1) + (lb.exp() * (lb - la)).sum(1))
        loss = loss + consistency * (sym_kl * same).sum() / same.sum().clamp(min=1.0)
    opt.zero_grad(set_to_none=True)
    if scaler is None:
        loss.backward()
        opt.step()
    else:
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    return loss, logits


def draw_step(synth, gen, batch_size: int, consistency: float = 0.0):
    """One training step's patches ``(x, y)`` from ``synth``'s stream ``gen`` (with
    ``consistency``: half as many crops, two views each, the views in the batch's two halves)."""
    if consistency:
        x, y = synth.sample(batch_size // 2, gen, views=2)
        return x.reshape(-1, *x.shape[2:]), y.reshape(-1)
    return synth.sample(batch_size, gen)


def _epoch_gen(seed: int, epoch: int) -> torch.Generator:
    """Epoch ``epoch``'s patch stream: its own seed, so an epoch can be drawn anywhere, in any order."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


_WORKER_SYNTH = None  # the PatchSynth a forked data worker inherits (never pickled: ~240 MB of stacks)


def _worker_init() -> None:
    torch.set_num_threads(1)  # the workers are the parallelism


def _draw_epoch(job):
    """A data worker's task: every step of one epoch as ``(uint16 counts, labels)`` numpy pairs,
    drawn exactly as :func:`_train` draws them itself (the counts are integers: the network's
    ``counts / 65535`` is made again, bit for bit, from them)."""
    seed, epoch, steps, batch_size, consistency = job
    gen = _epoch_gen(seed, epoch)
    out = []
    for _ in range(steps):
        x, y = draw_step(_WORKER_SYNTH, gen, batch_size, consistency)
        out.append(((x * 65535.0).round_().to(torch.int32).numpy().astype(np.uint16), y.numpy()))
    return out


def _epochs_of_patches(synth, first: int, epochs: int, *, seed, steps, batch_size, consistency, workers):
    """Per epoch from ``first``: an iterator of its steps' ``(x, y)`` tensors. ``workers`` > 0 draws
    whole epochs ahead in that many forked processes (the same patches: each epoch has its own
    stream); 0 draws each step in this process when the loop asks for it."""
    if not workers:
        for epoch in range(first, epochs):
            gen = _epoch_gen(seed, epoch)
            yield (draw_step(synth, gen, batch_size, consistency) for _ in range(steps))
        return
    import multiprocessing

    global _WORKER_SYNTH
    _WORKER_SYNTH = synth
    jobs = [(seed, e, steps, batch_size, consistency) for e in range(first, epochs)]
    try:  # fork: the workers share the blurred stacks copy-on-write; they use no accelerator
        with multiprocessing.get_context("fork").Pool(workers, initializer=_worker_init) as pool:
            # at most two epochs a worker ahead (an epoch of batch 128 is 180 MB of counts): a
            # slow consumer must not hold every epoch of the run in memory
            ahead = collections.deque(pool.apply_async(_draw_epoch, (j,)) for j in jobs[:2 * workers])
            for j in jobs[2 * workers:] + [None] * len(ahead):
                steps_np = ahead.popleft().get()
                if j is not None:
                    ahead.append(pool.apply_async(_draw_epoch, (j,)))
                yield ((torch.from_numpy(c).float() / 65535.0, torch.from_numpy(y)) for c, y in steps_np)
    finally:  # also when the training is cancelled: the pool is ended by the with block
        _WORKER_SYNTH = None


def iter_train_delpnet(
    out_dir="weights",
    *,
    epochs: int = 80,
    steps_per_epoch: int = 100,
    batch_size: int = 128,
    lr: float = 3e-3,
    width: int = SHIPPED_WIDTH,
    dropout: float = 0.1,
    head_dropout: float = 0.3,
    device="auto",
    seed: int = 0,
    resume: bool = True,
    data_root=None,
    wheels_dir=None,
    val_per_class: int = 40,
    test_per_class: int = 200,
    num_threads: int | None = None,
    real_check: bool = True,
    write_card: bool = True,
    objectives=None,
    gain_range=SHIPPED_GAIN_RANGE,
    psf_model: str = "paraxial",
    object_scales=None,
    init=None,
    consistency: float = 0.0,
    data_workers: int = 0,
    precision: str = "auto",
):
    """Generator form of :func:`train_delpnet`: yields Progress, returns the result dict.

    ``data_workers`` > 0: the patches of whole epochs are drawn ahead in that many processes (the
    same patches as with 0; for a GPU, whose steps would otherwise wait ~40 ms for each batch).
    ``precision``: one of :data:`PRECISIONS` (the steps' autocast; evaluation is the package's)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if not (isinstance(width, int) and width >= 1):
        raise ValueError(f"width must be a whole number >= 1 (16: the shipped weights; 64: the paper's), not {width!r}")
    if not (isinstance(data_workers, int) and data_workers >= 0):
        raise ValueError(f"data_workers must be a whole number >= 0, not {data_workers!r}")
    if not consistency >= 0:  # NaN too
        raise ValueError(f"consistency must be >= 0 (the weight of the two views' KL term), not {consistency}")
    with torch_threads(num_threads):
        return (yield from _train(out_dir, epochs=epochs, steps_per_epoch=steps_per_epoch, batch_size=batch_size,
                                  lr=lr, width=width, dropout=dropout, head_dropout=head_dropout, device=device,
                                  seed=seed, resume=resume, data_root=data_root, wheels_dir=wheels_dir,
                                  val_per_class=val_per_class, test_per_class=test_per_class,
                                  num_threads=num_threads, real_check=real_check, write_card=write_card,
                                  objectives=objectives, gain_range=gain_range, psf_model=psf_model,
                                  object_scales=object_scales, init=init, consistency=consistency,
                                  data_workers=data_workers, precision=precision))


def _train(out_dir, *, epochs, steps_per_epoch, batch_size, lr, width, dropout, head_dropout, device, seed, resume,
           data_root, wheels_dir, val_per_class, test_per_class, num_threads, real_check, write_card,
           objectives, gain_range, psf_model, object_scales, init, consistency, data_workers, precision):
    t_start = time.time()
    mixture = [dict(o, share=w) for o, w in (objectives or [({}, 1.0)])]  # for the record
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckdir = out / "checkpoints"
    dev = resolve_device(device)
    optics = Optics(psf_model=psf_model)

    # a fine-tune's start, read first: a damaged file, or another method's, is a one-line error naming it
    start = None if init is None else load_fresh(init)
    sources = load_sources(data_root, wheels_dir=wheels_dir)
    split = split_sources(sources)
    if not split["train"] or not split["val"] or not split["test"]:
        raise RuntimeError(f"not enough source images under {default_data_root(data_root)} to train")
    yield Progress(0, 1, "blurring source images")
    synth = PatchSynth([s.image for s in split["train"]], optics, objectives=objectives, gain_range=gain_range,
                       object_scales=object_scales)
    # validated on the same mixture of objectives and exposures as it is trained on
    val_x, val_y = fixed_set([s.image for s in split["val"]], val_per_class, seed=10_000, optics=optics,
                             objectives=objectives, gain_range=gain_range, object_scales=object_scales)

    with TorchRNG(seed, dev):
        model = prepare(DelpNet(width=width, dropout=dropout, head_dropout=head_dropout), dev)
    if init is not None:  # a fine-tune: the network starts from these weights (same config)
        if getattr(start, "config", None) != model.config:
            raise ValueError(f"{init}: a DelpNet with {getattr(start, 'config', None)}, not {model.config} "
                             "(the fine-tune's width and dropout must be the file's)")
        model.load_state_dict(start.state_dict())
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    # float16 autocast (models.delpnet.autocast) needs a loss scale; a resumed run starts a fresh one
    scaler = torch.amp.GradScaler("cuda") if dev.type == "cuda" and precision == "auto" else None
    total = epochs * steps_per_epoch
    warmup = max(1, min(300, total // 20))
    sched = FunctionLR(opt, lambda step: warmup_cosine(step, total, lr, warmup))
    parts = dict(modules={"model": model}, optimizers={"opt": opt}, schedulers={"lr": sched})
    state = {"epoch": 0, "best_val": -1.0, "best_epoch": -1, "history": [], "elapsed_s": 0.0}
    if resume:
        loaded = load_checkpoint(ckdir, **parts)
        if loaded is not None:
            if loaded.get("config") and loaded["config"] != model.config:
                raise ValueError("checkpoint in out_dir/checkpoints is for another model config; use resume=False")
            state.update({k: loaded[k] for k in state if k in loaded})
    elapsed0 = state["elapsed_s"]
    t_run = time.time()

    patches = _epochs_of_patches(synth, state["epoch"], epochs, seed=seed, steps=steps_per_epoch,
                                 batch_size=batch_size, consistency=consistency, workers=data_workers)
    try:
        for epoch, batches in zip(range(state["epoch"], epochs), patches):
            model.train()
            rng = TorchRNG(seed * 1_000_003 + epoch + 7, dev)  # the dropout masks
            losses, correct, seen = [], 0, 0
            for step, (x, y) in enumerate(batches):
                gstep = epoch * steps_per_epoch + step
                step_lr = opt.param_groups[0]["lr"]
                with rng:
                    y = y.to(dev)
                    loss, logits = train_step(model, opt, x, y, dev, consistency, scaler, precision)
                sched.step()
                losses.append(loss.item())
                correct += int((logits.detach().argmax(1) == y).sum())
                seen += y.numel()
                yield Progress(gstep + 1, total, f"epoch {epoch + 1}/{epochs} loss {np.mean(losses[-20:]):.3f}")
            probs = predict_proba(model, val_x, dev)
            val_acc = float((probs.argmax(1) == val_y).float().mean())
            rec = {
                "epoch": epoch + 1,
                "loss": float(np.mean(losses)),
                "train_acc": correct / max(seen, 1),
                "val_top1": val_acc,
                "lr": step_lr,
                "elapsed_s": elapsed0 + time.time() - t_run,
            }
            state["history"].append(rec)
            if val_acc >= state["best_val"]:
                state["best_val"], state["best_epoch"] = val_acc, epoch + 1
                save_weights(model, ckdir / "best.safetensors", write_hash=False)
            state["epoch"] = epoch + 1
            state["elapsed_s"] = rec["elapsed_s"]
            save_checkpoint(ckdir, dict(state, config=model.config, seed=seed), **parts)
            print(json.dumps(rec), flush=True)
    finally:  # a cancelled run ends its data workers now
        patches.close()

    # ---- final weights: the best validation epoch
    best_state, _ = load_state(ckdir / "best.safetensors")
    model.load_state_dict(best_state)
    train_time = state["elapsed_s"]
    meta = {
        "name": NAME,
        "optics": optics.as_dict(),
        "normalisation": NORMALISATION,
        "patch": 84,
        "classes": CLASS_NAMES,
        "provenance": {
            "trainer": "napari_refocus.training.train_delpnet",
            "seed": seed,
            "epochs": epochs,
            "steps_per_epoch": steps_per_epoch,
            "batch_size": batch_size,
            "lr_peak": lr,
            "best_epoch": state["best_epoch"],
            "train_sources": [s.name for s in split["train"]],
            "objectives": mixture,
            "gain_range": list(gain_range),
            "object_scales": [list(o) for o in object_scales] if object_scales else None,
            "init": str(init) if init else None,
            "consistency": consistency,
            "val_sources": [s.name for s in split["val"]],
            "test_sources": [s.name for s in split["test"]],
            "train_time_s": round(train_time, 1),
            "device": str(dev),
            "torch": torch.__version__,
        },
    }
    wpath = save_weights(model.to("cpu"), out / f"{NAME}.safetensors", meta=meta)
    yield Progress(0, 1, "evaluating")
    result = evaluate_delpnet(wpath, data_root=data_root, wheels_dir=wheels_dir, device=dev,
                              n_per_class=test_per_class, real_check=real_check)
    result["training"] = {
        "history": state["history"],
        "train_time_s": round(train_time, 1),
        "total_wall_s_this_call": round(time.time() - t_start, 1),
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads",
        "command_kwargs": {"epochs": epochs, "seed": seed, "width": width, "steps_per_epoch": steps_per_epoch,
                           "batch_size": batch_size, "lr": lr, "device": str(device), "num_threads": num_threads,
                           "objectives": mixture, "gain_range": list(gain_range), "psf_model": psf_model,
                           "object_scales": [list(o) for o in object_scales] if object_scales else None,
                           "init": str(init) if init else None, "consistency": consistency,
                           "data_workers": data_workers, "precision": precision},
    }
    result["sources"] = {k: [{"name": s.name, "kind": s.kind, "origin": s.origin, "licence": s.licence,
                              "shape": list(s.image.shape)} for s in v] for k, v in split.items()}
    (out / f"{NAME}_eval.json").write_text(json.dumps(result, indent=1))
    plot_confusion(result["test"]["confusion"], out / f"{NAME}_confusion.png")
    if write_card:
        write_delpnet_card(out / f"{NAME}.md", result, wpath)
    return result


def train_delpnet(out_dir="weights", *, progress: bool = True, **kwargs) -> dict:
    """Train DelpNet, write weights + evaluation + card into ``out_dir``; returns the results.

    Keyword arguments: see :func:`iter_train_delpnet` (``epochs``, ``device``, ``seed``,
    ``resume``, ``width``, ``data_root``, ``wheels_dir``, ...).
    """
    job = iter_train_delpnet(out_dir, **kwargs)
    return run_with_bar(job, "delpnet", enabled=progress, mininterval=5.0)
