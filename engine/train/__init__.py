"""Training: the embedded test model from scratch (embedded/) and drafters for a frozen model
(drafters/), over shared parts.

corpus.py       local Python files, filtered, deduplicated, split by content hash, manifest
fim.py          where to cut a file into prefix / middle / suffix (the kinds an editor asks for)
adam_files.py   AdamW moments in a safetensors file, so a drafter run resumes
embedded/       tokenizer_train.py (byte-level BPE, special tokens at fixed ids), examples.py (the
                decoder's exact layout: block-diffusion rows, masks, noising, packing), data.py (the
                deterministic, resumable example stream), trainer.py (loss, schedule, checkpoints,
                export), session.py (a run folder: prepare or resume), model_card.py, cli.py
                (`dllm-lsp train`)
drafters/       examples.py (the corpus and FIM examples every drafter trainer reads), mask_slots_train.py,
                features.py (the heads' frozen features), draft_head_train.py,
                attention_head_train.py, runs.py (`dllm-lsp train-drafter`)
"""
