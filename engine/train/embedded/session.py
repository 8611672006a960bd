"""A training session in a run folder: prepare (or resume) everything, train, export.

Run folder layout:
  manifest.json   the corpus scan (corpus.py)
  tokenizer.json  trained on the training split (or copied from the --init model)
  ckpt.pt         the resumable checkpoint (train/embedded/trainer.py)
  log.jsonl       one JSON line per log entry (step, tokens, loss, held-out loss, lr, wall_s)
  model/          the exported model folder (config.json, tokenizer.json, safetensors)

A folder that already has ckpt.pt resumes from it. `init` names a model folder (or
"embedded") to fine-tune from: its tokenizer and shape are kept and its weights loaded.
Used by `dllm-lsp train`, the background CPU run and scripts/train_gpu.py.
"""
from __future__ import annotations

import json
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional, Sequence

import torch

from engine.loading.config import ModelConfig
from engine.model.transformer import DecoderModel
import engine.train.corpus as corpus
from engine.train.embedded.data import DataConfig, ExampleStream
from engine.train.embedded.trainer import ModelShape, TrainConfig, Trainer, init_weights, model_config


@dataclass
class SessionConfig:
    run_dir: str
    roots: Sequence[str] = ()                 # empty: the standard library and site-packages
    init: Optional[str] = None                # model folder or "embedded" to fine-tune from
    vocab_size: int = 8192
    tokenizer_bytes: int = 30_000_000         # training text sampled for the tokenizer
    heldout_percent: float = 2.0
    shape: ModelShape = field(default_factory=ModelShape)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    device: str = "cpu"
    threads: Optional[int] = None


def _log(msg: str) -> None:
    print(time.strftime("%H:%M:%S"), msg, flush=True)


def prepare_corpus(cfg: SessionConfig, say: Callable[[str], None] = _log) -> List[corpus.SourceFile]:
    run = Path(cfg.run_dir)
    manifest = run / "manifest.json"
    if manifest.is_file():
        return corpus.read_manifest(manifest)
    roots = list(cfg.roots) or corpus.default_roots()
    say(f"scanning {', '.join(roots)}")
    files = corpus.scan(roots, heldout_percent=cfg.heldout_percent)
    doc = corpus.write_manifest(files, manifest, roots)
    say(f"corpus: {doc['counts']} files, {doc['bytes']} bytes")
    return files


def prepare_tokenizer(cfg: SessionConfig, train_files: List[corpus.SourceFile], init_folder: Optional[Path],
                      say: Callable[[str], None] = _log) -> Path:
    from tokenizers import Tokenizer  # noqa: PLC0415
    from engine.train.embedded.tokenizer_train import check_special_ids, train_tokenizer  # noqa: PLC0415
    path = Path(cfg.run_dir) / "tokenizer.json"
    if path.is_file():
        return path
    if init_folder is not None:
        shutil.copyfile(init_folder / "tokenizer.json", path)
        check_special_ids(Tokenizer.from_file(str(path)))
        return path
    picked, total = [], 0
    for f in random.Random(cfg.train.seed).sample(train_files, len(train_files)):
        if total >= cfg.tokenizer_bytes:
            break
        picked.append(f)
        total += f.bytes
    say(f"training a {cfg.vocab_size}-token BPE tokenizer on {len(picked)} files ({total} bytes)")
    texts = (t for t in (corpus.load_text(f) for f in picked) if t)
    train_tokenizer(texts, cfg.vocab_size).save(str(path))
    return path


def resolve_init(init: Optional[str]) -> Optional[Path]:
    if init is None:
        return None
    from engine.loading.resolve import resolve_model_path  # noqa: PLC0415
    # the trainer trains the self-trained block-diffusion model: "default" (a name older
    # commands used for it) means the embedded model here, not the pulled Qwen default
    return resolve_model_path("embedded" if init == "default" else init)


def load_init_weights(model: DecoderModel, mcfg: ModelConfig, folder: Path) -> None:
    from engine.loading.weights import expected_shapes, load_state  # noqa: PLC0415
    state = load_state(mcfg, folder, expected_shapes(model), torch.float32, "cpu")
    model.load_state_dict(state, strict=True)


def build(cfg: SessionConfig, say: Callable[[str], None] = _log) -> Trainer:
    """Everything a session needs, resumed from ckpt.pt when the run folder has one."""
    from tokenizers import Tokenizer  # noqa: PLC0415
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    run = Path(cfg.run_dir)
    run.mkdir(parents=True, exist_ok=True)
    init_folder = resolve_init(cfg.init)
    files = prepare_corpus(cfg, say)
    train_files = [f for f in files if f.split == "train"]
    heldout_files = [f for f in files if f.split == "heldout"]
    if not train_files:
        raise ValueError(f"no usable Python files under {list(cfg.roots) or 'the default roots'}")
    tok_path = prepare_tokenizer(cfg, train_files, init_folder, say)
    tk = Tokenizer.from_file(str(tok_path))
    encode = (lambda text: tk.encode(text, add_special_tokens=False).ids if text else [])
    if init_folder is not None:
        mcfg = ModelConfig.from_folder(init_folder).with_(extra={}, path=None)
    else:
        mcfg = model_config(cfg.shape, tk.get_vocab_size())
    cfg.data.block_size = mcfg.block_size
    torch.manual_seed(cfg.train.seed)
    model = DecoderModel(mcfg)
    init_weights(model, cfg.train.seed)
    if init_folder is not None:
        load_init_weights(model, mcfg, init_folder)
    model.to(cfg.device)
    texts = (lambda i: corpus.load_text(train_files[i]))
    stream = ExampleStream(texts, len(train_files), encode, cfg.data)
    trainer = Trainer(model, mcfg, cfg.train, stream, heldout_batches(heldout_files, encode, cfg, mcfg))
    trainer.tokenizer_path = tok_path
    ckpt = run / "ckpt.pt"
    if ckpt.is_file():
        trainer.load(ckpt)
        say(f"resumed from {ckpt} at step {trainer.state.step}")
    return trainer


def heldout_batches(files: List[corpus.SourceFile], encode, cfg: SessionConfig, mcfg: ModelConfig, n: int = 1):
    """A fixed batch of held-out examples (its own seed) for the held-out loss in the log."""
    from engine.train.embedded.examples import make_batch, pack_rows  # noqa: PLC0415
    if not files:
        return []
    dcfg = DataConfig(**{**cfg.data.__dict__, "seed": cfg.train.seed + 1})
    stream = ExampleStream(lambda i: corpus.load_text(files[i]), len(files), encode, dcfg)
    gen = torch.Generator().manual_seed(cfg.train.seed + 1)
    rows = max(1, cfg.train.rows // 2)
    out = []
    for _ in range(n):
        exs = [e for e in stream.take(cfg.train.examples_per_fill) if e.length <= cfg.train.capacity]
        packed, _ = pack_rows(exs, rows, cfg.train.capacity)
        out.append(make_batch(packed, mcfg.block_size, cfg.train.capacity, mcfg.mask_id, gen))
    return out


def train_facts(trainer: Trainer, hardware: str) -> dict:
    st = trainer.state
    n_params = sum(p.numel() for p in trainer.model.parameters())
    return {"steps": st.step, "tokens_seen": st.tokens_seen, "loss_tokens": st.loss_tokens,
            "wall_s": round(st.wall_s, 1), "parameters": n_params, "hardware": hardware,
            "final_loss": st.log[-1]["loss"] if st.log else None}


def hardware_name(device: str) -> str:
    if str(device).startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    import os  # noqa: PLC0415
    return f"CPU x{torch.get_num_threads()} threads ({os.cpu_count()} cores)"


def write_log(run_dir: Path, entry: dict) -> None:
    with open(Path(run_dir) / "log.jsonl", "a") as f:
        f.write(json.dumps(entry) + "\n")
