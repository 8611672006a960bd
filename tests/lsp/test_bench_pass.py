"""`dllm-lsp bench pass` on the tiny GGUF model: every part measured, the parts within the pass, the
fused products still fused while hooked."""
import json

import dllm_lsp.cli as cli
from dllm_lsp.bench.pass_time import PARTS, PartClock


def test_bench_pass_splits_each_pass_into_its_parts(tiny_gguf_qwen2, capsys):
    rc = cli.main(["bench", "pass", "--model", str(tiny_gguf_qwen2), "--dtype", "float32", "--threads", "1",
                   "--rows", "1,4", "--context", "24", "--reps", "3", "--json"])
    out = capsys.readouterr().out
    assert rc == 0, out
    result = json.loads(out.strip().splitlines()[-1])
    assert [p["rows"] for p in result["passes"]] == [1, 4]
    for p in result["passes"]:
        assert p["total_ms"] > 0 and p["products_ms"] > 0 and p["attention_ms"] > 0 and p["output_ms"] > 0
        assert p["products_ms"] + p["attention_ms"] + p["output_ms"] <= p["instrumented_ms"] + 1e-6
    assert "products" in out.splitlines()[1]


def test_bench_pass_ab_times_the_other_kernel_path_beside_the_default(tiny_gguf_qwen2, capsys):
    rc = cli.main(["bench", "pass", "--model", str(tiny_gguf_qwen2), "--threads", "1", "--rows", "3",
                   "--context", "24", "--reps", "2", "--ab", "two-blocks", "--json"])
    out = capsys.readouterr().out
    assert rc == 0, out
    (p,) = json.loads(out.strip().splitlines()[-1])["passes"]
    assert p["ab"] == "two-blocks" and p["ab_total_ms"] > 0
    assert "two-blocks ms" in out.splitlines()[1]


def test_the_clock_leaves_the_model_as_it_found_it(tiny_gguf_qwen2):
    import torch
    import engine.model.transformer as transformer
    from engine import Engine
    engine = Engine.load(str(tiny_gguf_qwen2), device="cpu", dtype="float32")
    model, attend = engine.model, transformer.attend
    hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
    ids = torch.tensor([[1, 2, 3]])
    with torch.inference_mode():
        plain, _ = model(ids, torch.arange(3), None, transformer.causal_visibility(3, 0))
        clock = PartClock()
        with clock.attached(model):
            timed, _ = model(ids, torch.arange(3), None, transformer.causal_visibility(3, 0))
    assert torch.equal(plain, timed) and set(clock.ms) == set(PARTS) and clock.ms["products"] > 0
    assert transformer.attend is attend
    assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()) == hooks
