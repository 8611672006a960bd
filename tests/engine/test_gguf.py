"""GGUF files through the engine: against transformers' own GGUF loading, and every error path.

The tiny files are written with gguf.GGUFWriter in llama.cpp's layout (qwen2 and llama, with
Q4_K, Q5_K, Q6_K, Q5_0, Q8_0, F16, BF16 and F32 tensors). The engine converts them once into a
bf16 safetensors folder; the oracle is transformers loading the same file (its own
dequantization, name mapping, llama un-permutation and tokenizer conversion) with its
parameters rounded to bf16 the same way, so the logits must agree to float32 precision.
"""
import json
import os

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("gguf")

from engine import Engine  # noqa: E402
from engine.errors import CheckpointError  # noqa: E402
from engine.loading.gguf_import import cached_folder, convert_gguf, unpermute_rows  # noqa: E402
from engine.testing.gguf_files import permute_rows, write_gguf_model  # noqa: E402

TEXTS = ["def add(a, b):\n    return a + b\n", "  naïve café ünïcode ✓ 🎉\r\n\tx=1", "",
         "<|fim_prefix|>x = 1<|fim_suffix|>\n<|fim_middle|>", "class Point:\n    def norm(self):  # 42\n"]


def hf_gguf(path, dtype=torch.float32):
    model = transformers.AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=dtype).eval()
    for p in model.parameters():                  # the engine stores bf16: round the oracle's weights alike
        p.data = p.data.to(torch.bfloat16).to(dtype)
    return model


@pytest.mark.parametrize("fixture", ["tiny_gguf_qwen2", "tiny_gguf_llama"])
def test_logits_equal_transformers_gguf_loading(request, fixture):
    path = request.getfixturevalue(fixture)
    eng = Engine.load(path, device="cpu", dtype="float32")
    assert eng.cfg.family == "ar" and eng.cfg.attention == "causal" and eng.cfg.logit_shift
    hf = hf_gguf(path)
    ids = torch.tensor([eng.tokenizer.encode(TEXTS[0] + TEXTS[4])])
    with torch.no_grad():
        ours, theirs = eng.model.logits(ids), hf(ids).logits
    # ours: logits[:, i] predicts token i (shift applied); transformers: logits[:, i] predicts i + 1
    assert (ours[:, 1:] - theirs[:, :-1]).abs().max().item() <= 1e-5 * theirs.abs().max().item()


def test_tokenizer_equals_transformers_gguf_tokenizer(tiny_gguf_qwen2):
    eng = Engine.load(tiny_gguf_qwen2, device="cpu", dtype="float32")
    hf_tok = transformers.AutoTokenizer.from_pretrained(str(tiny_gguf_qwen2.parent), gguf_file=tiny_gguf_qwen2.name)
    for text in TEXTS:
        ids = eng.tokenizer.encode(text)
        assert ids == hf_tok(text, add_special_tokens=False).input_ids, text
        assert eng.tokenizer.tk.decode(ids, skip_special_tokens=False) == text


def test_config_ids_and_stop_tokens_from_metadata(tiny_gguf_qwen2):
    cfg = Engine.load(tiny_gguf_qwen2, device="cpu", dtype="float32").cfg
    vocab = Engine.load(tiny_gguf_qwen2, device="cpu", dtype="float32").tokenizer.tk.get_vocab()
    names = {vocab[t]: t for t in vocab}
    assert {names[i] for i in cfg.stop_ids} == {"<|endoftext|>", "<|im_end|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>"}
    assert [names[cfg.fim_prefix_id], names[cfg.fim_suffix_id], names[cfg.fim_middle_id]] == \
        ["<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"]
    # the mask slot is the first embedding row the tokenizer never produces (a [PAD…] filler)
    assert cfg.mask_id == len(vocab) and cfg.mask_id < cfg.vocab_size
    assert not cfg.tie_embeddings and cfg.qkv_bias and cfg.num_layers == 3


def test_greedy_decoding_equals_transformers_generate(tiny_gguf_qwen2):
    eng = Engine.load(tiny_gguf_qwen2, device="cpu", dtype="float32")
    hf = hf_gguf(tiny_gguf_qwen2)
    from engine import InfillRequest
    stops = sorted(eng.cfg.stop_ids)
    cases = [("def add(a, b):\n    return ", "\n"), ("class Point:\n    def ", "        return x\n"),
             ("for i in range(10):\n", ""), ("x", "y")]
    for prefix, suffix in cases:
        for cache in ("auto", "none"):
            req = InfillRequest(prefix=prefix, suffix=suffix, max_new_tokens=12, cache=cache)
            res = eng.infill(req)
            ctx = eng.decoder().context_ids(req)
            out = hf.generate(torch.tensor([ctx]), max_new_tokens=12, do_sample=False, eos_token_id=stops,
                              pad_token_id=stops[0])[0, len(ctx):].tolist()
            expected = [t for t in out if t not in stops][:len(out)]
            if any(t in stops for t in out):
                expected = out[:next(i for i, t in enumerate(out) if t in stops)]
            assert list(res.token_ids) == expected, (prefix, cache)
            assert res.forwards == len(out) and res.finish_reason == ("eos" if len(expected) < len(out) else "length")


def test_permutation_round_trip():
    w = np.arange(8 * 3 * 5, dtype=np.float32).reshape(8 * 3, 5)
    assert np.array_equal(unpermute_rows(permute_rows(w, 3), 3), w)
    assert not np.array_equal(permute_rows(w, 3), w)


def test_conversion_is_cached_and_rebuilt_when_the_file_changes(tmp_path):
    path = write_gguf_model(tmp_path / "m.gguf")
    root = tmp_path / "cache"
    first = cached_folder(path, root)
    stamp = (first / "model.safetensors").stat().st_mtime_ns
    assert cached_folder(path, root) == first and (first / "model.safetensors").stat().st_mtime_ns == stamp
    write_gguf_model(path, seed=5)
    os.utime(path, ns=(stamp + 10**9, stamp + 10**9))
    second = cached_folder(path, root)
    assert second != first and json.loads((second / "source.json").read_text())["size"] == path.stat().st_size
    assert not list((root / "converted").glob("*.part-*")), "no half-written folder is left behind"


def test_a_folder_holding_one_gguf_file_loads(tmp_path):
    write_gguf_model(tmp_path / "model" / "x.gguf") if (tmp_path / "model").mkdir() is None else None
    assert Engine.load(tmp_path / "model", device="cpu").cfg.family == "ar"
    write_gguf_model(tmp_path / "model" / "y.gguf")
    with pytest.raises(CheckpointError, match="several .gguf"):
        Engine.load(tmp_path / "model", device="cpu")


def test_truncated_and_junk_files_give_one_clear_error(tmp_path):
    good = write_gguf_model(tmp_path / "good.gguf")
    data = good.read_bytes()
    (tmp_path / "trunc.gguf").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.gguf").write_bytes(b"not a gguf file at all" * 10)
    for name in ("trunc.gguf", "junk.gguf"):
        with pytest.raises(CheckpointError, match=name):
            convert_gguf(tmp_path / name, tmp_path / "out" / name)
        assert not (tmp_path / "out" / name).exists()


def test_wrong_metadata_and_tensors_are_named(tmp_path):
    missing = write_gguf_model(tmp_path / "a.gguf", omit_keys=("feed_forward_length",))
    with pytest.raises(CheckpointError, match=r"a\.gguf.*'qwen2.feed_forward_length' is missing"):
        convert_gguf(missing, tmp_path / "out")
    wrong = write_gguf_model(tmp_path / "b.gguf", intermediate=256, claim_intermediate=128)
    with pytest.raises(CheckpointError, match=r"b\.gguf.*wrong shapes: .*blk\.0\.ffn_down\.weight \[64, 256\] \(expected \[64, 128\]\)"):
        convert_gguf(wrong, tmp_path / "out")
    no_tensor = write_gguf_model(tmp_path / "c.gguf", skip_tensors=("blk.1.attn_v.weight",))
    with pytest.raises(CheckpointError, match=r"c\.gguf.*missing tensors: model\.layers\.1\.self_attn\.v_proj"):
        convert_gguf(no_tensor, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_unsupported_architecture_is_refused(tmp_path):
    import gguf
    w = gguf.GGUFWriter(str(tmp_path / "m.gguf"), "mamba")
    w.add_tensor("token_embd.weight", np.zeros((4, 8), np.float32))
    w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file(), w.close()
    with pytest.raises(CheckpointError, match="m.gguf"):
        Engine.load(tmp_path / "m.gguf", device="cpu")


# ---- the real default model, when pulled ------------------------------------------------

def test_real_model_tokenizer_and_shapes(real_engine):
    cfg, tok = real_engine.cfg, real_engine.tokenizer
    assert (cfg.num_layers, cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads) == (24, 896, 14, 2)
    assert tok.token_id("<|fim_middle|>") == cfg.fim_middle_id == 151660
    assert tok.encode("def hello():\n    return 1") == [750, 23811, 3932, 262, 470, 220, 16]
    assert real_engine.model.dtype == torch.float32      # fp32 activations on any CPU (pick_dtype)


@pytest.mark.slow
def test_real_model_greedy_equals_transformers(real_engine, real_model_file):
    """Token for token equal to transformers' generate on the same GGUF file (same dtype both)."""
    from engine import InfillRequest
    hf = hf_gguf(real_model_file, dtype=real_engine.model.dtype)
    stops = sorted(real_engine.cfg.stop_ids)
    cases = [("def count_words(text):\n    counts = {}\n    for word in text.split():\n        counts[word] = ",
              "\n    return counts\n"), ("import os\n\ndef list_py(path):\n    return [f for f in os.listdir(path) if ", "\n")]
    for prefix, suffix in cases:
        req = InfillRequest(prefix=prefix, suffix=suffix, max_new_tokens=16)
        res = real_engine.infill(req)
        ctx = real_engine.decoder().context_ids(req)
        out = hf.generate(torch.tensor([ctx]), max_new_tokens=16, do_sample=False, eos_token_id=stops,
                          pad_token_id=stops[0])[0, len(ctx):].tolist()
        expected = out[:next((i for i, t in enumerate(out) if t in stops), len(out))]
        assert list(res.token_ids) == expected, prefix
