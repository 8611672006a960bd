"""AdamW moments in a safetensors file, so a drafter run resumes where it stopped.

Keys are `<parameter name>.exp_avg`, `.exp_avg_sq` and `.step` (a [1] float tensor); a parameter
without state in the optimizer (never stepped) is left out, and one absent from the file
starts fresh on load.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


def save_adam(opt: torch.optim.Optimizer, module: nn.Module, path: Path) -> None:
    from safetensors.torch import save_file
    names = {id(p): n for n, p in module.named_parameters()}
    tensors = {}
    for group in opt.param_groups:
        for p in group["params"]:
            st = opt.state.get(p)
            if st:
                n = names[id(p)]
                tensors[f"{n}.exp_avg"] = st["exp_avg"].detach().cpu().contiguous()
                tensors[f"{n}.exp_avg_sq"] = st["exp_avg_sq"].detach().cpu().contiguous()
                tensors[f"{n}.step"] = torch.as_tensor(st["step"]).reshape(1).float().cpu()
    if tensors:
        path = Path(path)
        tmp = path.with_name(path.name + ".part")
        save_file(tensors, str(tmp))
        tmp.replace(path)


def load_adam(opt: torch.optim.Optimizer, module: nn.Module, path: Path) -> None:
    path = Path(path)
    if not path.is_file():
        return
    from safetensors.torch import load_file
    saved = load_file(str(path))
    for n, p in module.named_parameters():
        if f"{n}.exp_avg" in saved:
            opt.state[p] = {"exp_avg": saved[f"{n}.exp_avg"].to(p), "exp_avg_sq": saved[f"{n}.exp_avg_sq"].to(p),
                            "step": saved[f"{n}.step"].reshape(()).clone()}
