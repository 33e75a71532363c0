"""Resumable training checkpoints, one format for every recipe (never shipped, never pickled).

``<ckdir>/last.safetensors`` holds the tensors: ``m.<module>.<key>`` for the networks and
``o.<optimiser>.<param id>.<key>`` for the optimisers' state; ``<ckdir>/last.json`` holds the
recipe's own state (step/epoch, history, ...), the optimisers' parameter groups (lr, betas...)
and the LR schedulers' state. Both are written to a temporary file first, then renamed.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch


def save_checkpoint(ckdir, state: dict, *, modules: dict, optimizers: dict, schedulers: dict | None = None) -> None:
    """Write ``modules`` / ``optimizers`` / ``schedulers`` (dicts name -> object) and ``state``."""
    from safetensors.torch import save_file

    ckdir = Path(ckdir)
    ckdir.mkdir(parents=True, exist_ok=True)
    tensors, groups = {}, {}
    for name, m in modules.items():
        for k, v in m.state_dict().items():
            tensors[f"m.{name}.{k}"] = v.detach().cpu().contiguous()
    for name, o in optimizers.items():
        sd = o.state_dict()
        for pid, st in sd["state"].items():
            for k, v in st.items():
                t = v if torch.is_tensor(v) else torch.tensor(v)
                tensors[f"o.{name}.{pid}.{k}"] = t.detach().cpu().contiguous()
        groups[name] = [{k: v for k, v in g.items() if k != "params"} for g in sd["param_groups"]]
    scheds = {name: s.state_dict() for name, s in (schedulers or {}).items()}
    save_file(tensors, str(ckdir / "last.safetensors.tmp"))
    (ckdir / "last.safetensors.tmp").replace(ckdir / "last.safetensors")
    (ckdir / "last.json.tmp").write_text(json.dumps({**state, "param_groups": groups, "schedulers": scheds}, indent=1))
    (ckdir / "last.json.tmp").replace(ckdir / "last.json")


def load_checkpoint(ckdir, *, modules: dict, optimizers: dict, schedulers: dict | None = None) -> dict | None:
    """Restore what :func:`save_checkpoint` wrote into the given objects; returns the saved
    state dict, or None when ``ckdir`` holds no checkpoint."""
    from safetensors.torch import load_file

    ckdir = Path(ckdir)
    if not (ckdir / "last.safetensors").exists() or not (ckdir / "last.json").exists():
        return None
    tensors = load_file(str(ckdir / "last.safetensors"))
    state = json.loads((ckdir / "last.json").read_text())
    for name, m in modules.items():
        pre = f"m.{name}."
        m.load_state_dict({k[len(pre):]: v for k, v in tensors.items() if k.startswith(pre)})
    for name, o in optimizers.items():
        pre = f"o.{name}."
        ost: dict = {}
        for k, v in tensors.items():
            if k.startswith(pre):
                pid, key = k[len(pre):].split(".", 1)
                ost.setdefault(int(pid), {})[key] = v
        groups = o.state_dict()["param_groups"]
        for g, saved in zip(groups, state["param_groups"].get(name, [])):
            g.update(saved)
        o.load_state_dict({"state": ost, "param_groups": groups})
    for name, s in (schedulers or {}).items():
        if name in state.get("schedulers", {}):
            s.load_state_dict(state["schedulers"][name])
    return state
