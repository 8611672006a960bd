#!/usr/bin/env python
"""Export the latest checkpoint of a training run into engine/assets/embedded_model/ and regenerate its model card.

    python scripts/export_default_model.py --run runs/main [--out engine/assets/embedded_model] [--evals runs/eval]

Reads <run>/ckpt.pt (model weights, config, train state), <run>/tokenizer.json, <run>/log.jsonl
and <run>/manifest.json; writes config.json (with train_* facts), tokenizer.json, safetensors
files of at most 16 MB, and MODEL_CARD.md with the loss curve and every evaluation JSON found in
--evals (written by `dllm-lsp eval ... --json`). Then checks that the engine loads the folder.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def read_log(path: Path) -> list:
    """log.jsonl entries, skipping unreadable lines and keeping the last entry per step."""
    by_step = {}
    if path.is_file():
        for line in path.read_text(errors="replace").splitlines():
            line = line.strip("\x00 ")
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            by_step[entry["step"]] = entry
    return [by_step[s] for s in sorted(by_step)]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", default="runs/main")
    p.add_argument("--out", default=str(ROOT / "engine" / "assets" / "embedded_model"))
    p.add_argument("--evals", default="runs/eval", help="folder of evaluation JSON files for the card")
    p.add_argument("--hardware", default=None, help="override the hardware line")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--train-command", default=None, help="the training command shown in the card")
    args = p.parse_args(argv)

    import torch  # noqa: PLC0415
    from engine import Engine  # noqa: PLC0415
    from engine.loading.config import ModelConfig  # noqa: PLC0415
    from engine.model.transformer import DecoderModel  # noqa: PLC0415
    import engine.train.embedded.model_card as model_card  # noqa: PLC0415
    from engine.train.embedded.trainer import export_model  # noqa: PLC0415

    run, out = Path(args.run), Path(args.out)
    blob = torch.load(run / "ckpt.pt", map_location="cpu", weights_only=True)
    tmp_cfg = out / ".export-config"
    tmp_cfg.mkdir(parents=True, exist_ok=True)
    (tmp_cfg / "config.json").write_text(json.dumps(blob["model_config"]))
    mcfg = ModelConfig.from_folder(tmp_cfg).with_(path=None)
    (tmp_cfg / "config.json").unlink()
    tmp_cfg.rmdir()
    model = DecoderModel(mcfg)
    model.load_state_dict(blob["model"])
    st = blob["train_state"]
    log = read_log(run / "log.jsonl") or st.get("log", [])
    hardware = args.hardware or _previous_hardware(run) or f"CPU, {torch.get_num_threads()} threads"
    facts = {"steps": st["step"], "tokens_seen": st["tokens_seen"], "loss_tokens": st["loss_tokens"],
             "wall_s": round(st["wall_s"], 1), "parameters": sum(p.numel() for p in model.parameters()),
             "hardware": hardware, "final_loss": log[-1]["loss"] if log else None}
    tcfg = blob.get("train_config", {})
    if tcfg.get("ar_fraction"):
        facts.update(ar_fraction=tcfg["ar_fraction"], ar_weight=tcfg.get("ar_weight"))
    dtype = torch.bfloat16 if args.dtype == "bfloat16" else torch.float32
    export_model(model, mcfg, run / "tokenizer.json", out, facts, dtype)
    manifest = None
    if (run / "manifest.json").is_file():
        manifest = json.loads((run / "manifest.json").read_text())
        manifest.pop("files", None)
    evals = model_card.load_evals(sorted(Path(args.evals).glob("*.json"))) if Path(args.evals).is_dir() else []
    config = json.loads((out / "config.json").read_text())
    train_cmd = args.train_command or _train_command(run)
    (out / "MODEL_CARD.md").write_text(model_card.render(config, log, manifest, evals, {"train": train_cmd}))
    eng = Engine.load(out)
    size = sum(f.stat().st_size for f in out.glob("*.safetensors"))
    print(f"exported step {st['step']} ({st['tokens_seen']} tokens seen) to {out}: "
          f"{eng.describe()['parameters'] / 1e6:.2f}M parameters, {size / 2 ** 20:.1f} MiB of weights, "
          f"{len(evals)} evaluation file(s) in the card")
    return 0


def _previous_hardware(run: Path):
    path = run / "hardware.txt"
    return path.read_text().strip() if path.is_file() else None


def _train_command(run: Path):
    path = run / "command.txt"
    return path.read_text().strip() if path.is_file() else None


if __name__ == "__main__":
    sys.exit(main())
