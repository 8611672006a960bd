"""Training the embedded default model: corpus -> tokenizer -> FIM examples -> block-diffusion trainer.

corpus.py            local Python files, filtered, deduplicated, split by content hash, manifest
tokenizer_train.py   byte-level BPE with the special tokens at fixed ids
fim.py               where to cut a file into prefix / middle / suffix (the kinds an editor asks for)
examples.py          the decoder's exact layout, two-copies block diffusion rows, masks, noising, packing
data.py              the deterministic, resumable example stream
trainer.py           loss, optimiser, schedule, checkpoints, export to a model folder
session.py           a run folder: prepare or resume, used by the CLI and scripts/train_gpu.py
model_card.py        MODEL_CARD.md from the facts
cli.py               `dllm-lsp train`
"""
