"""`dllm-lsp bench engine` (also `python -m engine.bench.steps`): decoding policies, step time, kernels.

    python -m engine.bench.steps --random-weights tests/fixtures/model_configs/dream-v0-7b.json --context 2048 --block 32
    python -m engine.bench.steps --random-weights tests/fixtures/model_configs/dream-v0-7b.json --layers 2 --hidden 256
    python -m engine.bench.steps --model path/to/model --context 512 --span 32 --json

Three sections, all from one process, one model, one canvas:
  policies  each commit policy x cache setting decoding the same span, next to the baseline
            (quota, one token per step, no cache): forward passes, tokens per forward, median ms
            per forward, tokens/s, and agreement with the baseline's tokens. Random weights give
            near-uniform confidences (threshold policies then commit one token per step): use
            --model with a trained checkpoint for meaningful tokens-per-forward numbers.
  step      one decoding step at the shape that matters (query = one block, keys = the context;
            bidirectional dual cache / block-causal exact cache) with and without CUDA graphs,
            the full-canvas step (no cache) for comparison, the weight-read floor (bytes of the
            weights read per step / copy bandwidth measured in this run), and tokens/s at fixed
            tokens per forward (k x 1000 / step ms).
  kernels   each kernel of the active backend against the torch reference at the model's shapes,
            and the decision kernel against torch's softmax + max + argmax.

The canvas is token ids, not text: the decoder is driven through IdText, a tokenizer whose
"text" is the ids written out, so random-weight models need no tokenizer. With --model the
ids come from the checkpoint's tokenizer applied to Python source from the standard library.
Heavy imports happen inside run(), so `dllm-lsp` can build its parser cheaply. The step and
kernel sections live in bench/timing.py, random-weight models in testing/random_weights.py.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import List, Optional, Sequence

POLICIES = {  # label -> InfillRequest fields
    "quota k=1": dict(policy="quota", tokens_per_step=1),
    "quota k=2": dict(policy="quota", tokens_per_step=2),
    "quota k=4": dict(policy="quota", tokens_per_step=4),
    "threshold 0.9": dict(policy="threshold", threshold=0.9),
    "threshold 0.7": dict(policy="threshold", threshold=0.7),
    "entropy 0.5": dict(policy="entropy", entropy_bound=0.5),
}
BASELINE = ("quota k=1", "none")
TARGETS = {"floor_ratio": 1.2, "tokens_per_s_at_6": 1200.0, "decision_speedup": 3.0}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="a model folder (config.json, tokenizer.json, *.safetensors)")
    src.add_argument("--random-weights", metavar="CONFIG",
                     help="a config.json (or a folder with one), e.g. tests/fixtures/model_configs/dream-v0-7b.json")
    parser.add_argument("--layers", type=int, help="random weights: override the number of layers")
    parser.add_argument("--hidden", type=int, help="random weights: override the hidden size (heads follow)")
    parser.add_argument("--intermediate", type=int, help="random weights: override the MLP size")
    parser.add_argument("--vocab", type=int, help="random weights: override the vocabulary size")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    parser.add_argument("--dtype", default="auto", help="auto (bf16 on CUDA, fp32 on CPU) | float32 | bfloat16")
    parser.add_argument("--kernels", default="auto", choices=("auto", "torch", "cupy"),
                        help="kernels: auto (CuPy fused kernels on CUDA when installed, else torch) | torch | cupy")
    parser.add_argument("--cuda-graphs", default="auto", choices=("auto", "on", "off"),
                        help="CUDA-graph replay of the decode step: auto (DLLM_CUDA_GRAPHS=1 turns it on) | on | off")
    parser.add_argument("--context", type=int, default=1024, help="context tokens around the span")
    parser.add_argument("--span", type=int, default=32, help="tokens to generate")
    parser.add_argument("--block", type=int, default=32, help="block size of semi-autoregressive decoding")
    parser.add_argument("--policies", help="comma-separated subset of: " + ", ".join(POLICIES))
    parser.add_argument("--caches", help="comma-separated subset of the caches to run (none,prefix,dual | auto,none)")
    parser.add_argument("--sections", default="policies,step,kernels", help="which sections to run")
    parser.add_argument("--stop-at-eos", action="store_true",
                        help="let spans end at EOS (default: every run fills the whole span, so runs compare)")
    parser.add_argument("--reps", type=int, default=0, help="timing repetitions (0: 20 on CUDA, 5 on CPU)")
    parser.add_argument("--bw-mib", type=int, default=0, help="copy-bandwidth buffer (0: 1024 on CUDA, 256 on CPU)")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the weights and the canvas")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.add_argument("--out", help="also write the JSON report to this file")


def run(args: argparse.Namespace) -> int:
    import torch

    from engine.model.forms import pick_device, pick_dtype
    from engine.errors import EngineError

    if any(v is not None and v < 1 for v in (args.layers, args.hidden, args.intermediate, args.vocab)) or \
            min(args.context, args.span, args.block) < 1:
        print("bench engine: sizes must be positive", file=sys.stderr)
        return 2
    device = pick_device(args.device)
    dtype = pick_dtype(args.dtype, device)
    torch.manual_seed(args.seed)
    reps = args.reps or (20 if device.startswith("cuda") else 5)
    graphs = {"auto": "auto", "on": True, "off": False}[args.cuda_graphs]
    try:
        model, cfg, canvas, source = _load(args, device, dtype, graphs)
    except (ValueError, MemoryError, EngineError) as exc:
        print(f"bench engine: {exc}", file=sys.stderr)
        return 2
    sections = {s.strip() for s in args.sections.split(",")}
    report = {"setup": _describe(model, cfg, source, device, dtype, args), "targets": TARGETS}
    if "policies" in sections:
        report["policies"] = bench_policies(model, cfg, canvas, args)
    from engine.bench.timing import bench_kernels, bench_step

    if "step" in sections:
        report["step"] = bench_step(model, cfg, args.context, args.block, reps, args.bw_mib)
    if "kernels" in sections:
        report["kernels"] = bench_kernels(model, cfg, args.block, reps)
    text = json.dumps(report, indent=1, default=str)
    if args.out:
        Path(args.out).write_text(text)
    print(text if args.json else format_report(report))
    return 0


# ---- model and canvas ---------------------------------------------------------------------------
def _load(args, device: str, dtype, graphs):
    import torch

    from engine.kernels.cuda.graph import attach_cuda_graphs
    from engine.engine import Engine
    from engine.testing.random_weights import check_memory, config_from, random_model, resized_config

    if args.model:
        eng = Engine.load(args.model, device=device, dtype=str(dtype).replace("torch.", ""),
                          kernels=args.kernels, cuda_graphs=graphs)
        ids = eng.tokenizer.encode(_python_source())
        canvas = _split_canvas(ids, args.context, args.seed)
        return eng.model, eng.cfg, canvas, f"checkpoint {args.model}"
    cfg = resized_config(config_from(args.random_weights), layers=args.layers, hidden=args.hidden,
                         intermediate=args.intermediate, vocab=args.vocab)
    check_memory(cfg, device, dtype)
    model = random_model(cfg, device, dtype, args.kernels, seed=args.seed)
    attach_cuda_graphs(model, graphs)
    g = torch.Generator().manual_seed(args.seed)
    ids = torch.randint(0, cfg.vocab_size, (args.context,), generator=g).tolist()
    specials = {i for i in (cfg.mask_id, cfg.eos_id, cfg.pad_id, cfg.bos_id, cfg.fim_prefix_id,
                            cfg.fim_suffix_id, cfg.fim_middle_id) if i is not None}
    safe = next(i for i in range(cfg.vocab_size) if i not in specials)
    ids = [safe if i in specials else i for i in ids]
    return model, cfg, _split_canvas(ids, args.context, args.seed), f"random weights from {args.random_weights}"


def _python_source() -> str:
    """Real code for checkpoints with a tokenizer: a few standard-library modules."""
    import argparse as a
    import textwrap as t
    import json.decoder as j

    return "\n".join(Path(m.__file__).read_text(encoding="utf-8") for m in (a, t, j))


def _split_canvas(ids: List[int], context: int, seed: int) -> dict:
    """Prefix (3/4 of the context) and suffix (1/4) taken around a point of `ids`."""
    n_suffix = context // 4
    n_prefix = context - n_suffix
    if len(ids) < context:
        ids = (ids * (context // max(1, len(ids)) + 1))
    cut = min(len(ids) - n_suffix, max(n_prefix, len(ids) // 2))
    return {"prefix": ids[cut - n_prefix:cut], "suffix": ids[cut:cut + n_suffix]}


class IdText:
    """A tokenizer whose text is token ids written out ("12 7 408"): drives the DiffusionDecoder with ids."""

    def __init__(self, vocab_size: int, special_ids=()):
        self.vocab_size = vocab_size
        self.special_ids = frozenset(special_ids)

    @staticmethod
    def text(ids: Sequence[int]) -> str:
        return " ".join(str(int(i)) for i in ids)

    def encode(self, text: str) -> List[int]:
        return [int(t) for t in text.split()]

    def decode(self, ids: Sequence[int]) -> str:
        return self.text(i for i in ids if i not in self.special_ids)

    safe_decode = decode

    def token_id(self, token: str) -> Optional[int]:
        return None


# ---- section 1: policies x caches -----------------------------------------------------------------
def cache_settings(cfg) -> List[str]:
    return ["auto", "none"] if cfg.attention == "block_causal" else ["none", "prefix", "dual"]


def bench_policies(model, cfg, canvas: dict, args) -> List[dict]:
    from engine.api import InfillRequest

    policies = _subset(args.policies, POLICIES)
    caches = _subset(args.caches, cache_settings(cfg))
    runs = [BASELINE] + [(p, c) for p in policies for c in caches if (p, c) != BASELINE]
    tok = IdText(cfg.vocab_size, cfg.stop_ids)

    def request(policy: str, cache: str) -> InfillRequest:
        return InfillRequest(prefix=IdText.text(canvas["prefix"]), suffix=IdText.text(canvas["suffix"]),
                             max_new_tokens=args.span, block_size=args.block, cache=cache,
                             stop_at_eos=args.stop_at_eos, **POLICIES[policy])

    decode_once(model, tok, cfg, request(*BASELINE))                     # warm-up (allocator, kernels)
    rows, base_ids = [], None
    for policy, cache in runs:
        res, step_ms = decode_once(model, tok, cfg, request(policy, cache))
        ids = list(res.token_ids)
        if base_ids is None:
            base_ids = ids
        same = sum(a == b for a, b in zip(ids, base_ids))
        rows.append({
            "policy": policy, "cache": "exact" if cache == "auto" else cache,
            "baseline": (policy, cache) == BASELINE, "forwards": res.forwards, "tokens": res.new_tokens,
            "tokens_per_forward": res.new_tokens / max(1, res.forwards),
            "ms_per_forward": statistics.median(step_ms) if step_ms else 0.0,
            "ms_total": res.ms, "tokens_per_s": res.new_tokens / max(res.ms, 1e-9) * 1000,
            "match_baseline": same / max(1, len(base_ids), len(ids)),
        })
    return rows


def decode_once(model, tok, cfg, req):
    """Run one request; (InfillResult, per-forward wall times in ms)."""
    from engine.decoding.diffusion import DiffusionDecoder
    from engine.model.kvcache import ContextCache

    stamps = [time.perf_counter()]
    last = None
    for last in DiffusionDecoder(model, tok, cfg, ContextCache()).run(req):
        stamps.append(time.perf_counter())
    steps = [(b - a) * 1000 for a, b in zip(stamps, stamps[1:])]
    return last.result, steps


def _subset(spec: Optional[str], allowed) -> List[str]:
    if not spec:
        return list(allowed)
    chosen = [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in allowed]
    if unknown:
        raise ValueError(f"unknown choice(s) {unknown}; choose from {list(allowed)}")
    return chosen


# ---- output ---------------------------------------------------------------------------------------
def _describe(model, cfg, source: str, device: str, dtype, args) -> dict:
    import torch

    info = {"source": source, "family": cfg.family, "attention": cfg.attention, "layers": cfg.num_layers,
            "hidden": cfg.hidden_size, "heads": f"{cfg.num_heads}/{cfg.num_kv_heads}", "vocab": cfg.vocab_size,
            "parameters": sum(p.numel() for p in model.parameters()), "device": device,
            "dtype": str(dtype).replace("torch.", ""), "kernels": model.kernels.NAME,
            "cuda_graphs": getattr(model, "graphed_step", None) is not None,
            "context": args.context, "span": args.span, "block": args.block, "torch": torch.__version__}
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def format_table(headers: Sequence[str], rows: Sequence[Sequence]) -> str:
    """A Markdown table (readable as plain text too)."""
    cells = [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in cells)) if cells else len(str(h)) for i, h in enumerate(headers)]
    line = lambda vals: "| " + " | ".join(str(v).ljust(w) for v, w in zip(vals, widths)) + " |"  # noqa: E731
    return "\n".join([line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(r) for r in cells])


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else ""
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"
    return str(v)


def format_report(report: dict) -> str:
    s = report["setup"]
    out = [f"model: {s['source']} ({s['family']}, {s['attention']}, {s['layers']} layers, hidden {s['hidden']}, "
           f"heads {s['heads']}, vocab {s['vocab']}, {s['parameters'] / 1e6:.1f}M params)",
           f"device: {s.get('gpu', s['device'])}, {s['dtype']}, kernels {s['kernels']}, "
           f"CUDA graphs {'on' if s['cuda_graphs'] else 'off'}, torch {s['torch']}; "
           f"canvas: context {s['context']}, span {s['span']}, block {s['block']}"]
    if "policies" in report:
        rows = [[r["policy"], r["cache"], r["forwards"], r["tokens"], r["tokens_per_forward"], r["ms_per_forward"],
                 r["tokens_per_s"], f"{100 * r['match_baseline']:.0f}%", r["baseline"]] for r in report["policies"]]
        out += ["", "## policies x caches (same canvas)", format_table(
            ["policy", "cache", "forwards", "tokens", "tok/fwd", "ms/fwd (median)", "tok/s", "= baseline",
             "baseline"], rows)]
    if "step" in report:
        st = report["step"]
        rows = [["step, eager", st["step_ms_eager"]], ["step, CUDA graph", st["step_ms_graphed"]],
                ["full canvas, no cache", st["full_canvas_ms"]],
                ["weight-read floor", st["floor_ms"]], ["floor incl. KV read", st["floor_ms_with_kv"]]]
        out += ["", f"## one step: {st['query_tokens']} query tokens against {st['past_tokens']} cached "
                    f"(forward + decision); copy bandwidth {st['copy_bandwidth_gbs']:.0f} GB/s, "
                    f"weights read {st['weight_bytes_read'] / 1e9:.2f} GB",
                format_table(["what", "ms"], rows),
                f"step / floor = {st['floor_ratio']:.2f} (target <= {TARGETS['floor_ratio']})",
                "tokens/s at fixed tokens per forward: " + ", ".join(
                    f"{k}: {v:.0f}" for k, v in st["tokens_per_s_at_fixed_tpf"].items())
                + f" (target >= {TARGETS['tokens_per_s_at_6']:.0f} at 6)"]
    if "kernels" in report:
        rows = [[r["kernel"], r["shape"], r["torch_us"], r.get("fused_us"), r.get("torch_graphed_us"),
                 r.get("fused_graphed_us")] for r in report["kernels"]]
        out += ["", "## kernels (us per call)", format_table(
            ["kernel", "shape", "torch", "fused", "torch graphed", "fused graphed"], rows)]
        dec = next(r for r in report["kernels"] if r["kernel"] == "decision")
        if "speedup_vs_softmax_max_argmax" in dec:
            out.append(f"decision vs softmax+max+argmax: {dec['speedup_vs_softmax_max_argmax']:.2f}x eager, "
                       f"{_fmt(dec.get('graphed_speedup_vs_softmax_max_argmax'))}x graphed "
                       f"(target >= {TARGETS['decision_speedup']})")
        else:
            out.append("fused kernels: not available here (they need CUDA and CuPy)")
    return "\n".join(out)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.bench.steps", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
