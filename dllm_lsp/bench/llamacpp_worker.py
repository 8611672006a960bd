"""llama.cpp side of `dllm-lsp bench decode`: run as a script by a Python that has llama-cpp-python.

    /work/llama/bin/python dllm_lsp/bench/llamacpp_worker.py      (JSON lines on stdin/stdout)

Imports only the standard library and llama_cpp, so llama-cpp-python never has to be in
dllm-lsp's own environment. Protocol, one JSON object per line:
  -> {"model_path": str, "n_threads": int, "n_ctx": int}
  <- {"ready": true, "llama_cpp": version}        or {"error": "..."} (then it exits)
  -> {"prompt_tokens": [int], "max_tokens": int, "stop_ids": [int], "stop_newline": bool}
  <- {"tokens": [int], "ms_cold": float, "tokens_warm": [int], "ms_warm": float}
Greedy (temp 0, top_k 1, no penalties). A stop id ends the answer without being included;
with stop_newline the answer ends after the first token whose bytes hold a newline.
Cold: llm.reset() first, so nothing of an earlier prompt is reused. Warm: the same prompt
again at once; Llama.generate keeps the longest shared token prefix of its last input (all
but the prompt's last token here), so only that token and the answer are computed; when the
cold answer ended after its first token, no token past the prompt was evaluated and its
logits are still live, so the warm run samples without any evaluation. (Ours, warm, takes its
first token from the cached last state without a pass; its warm= run computes the prompt's last
token again, which is llama.cpp's warm state: bench/decode.py.)
stdout is kept for the protocol: file descriptor 1 is pointed at stderr while llama.cpp runs.
"""
import json
import os
import sys
import time


def complete(llm, prompt, max_tokens, stop_ids, stop_newline):
    out = []
    t0 = time.perf_counter()
    for tok in llm.generate(prompt, top_k=1, top_p=1.0, min_p=0.0, temp=0.0, repeat_penalty=1.0,
                            reset=True):
        if tok in stop_ids:
            break
        out.append(int(tok))
        if len(out) >= max_tokens or (stop_newline and b"\n" in llm.detokenize([tok])):
            break
    return out, (time.perf_counter() - t0) * 1000


def main():
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)                      # anything llama.cpp prints goes to stderr
    send = lambda obj: proto.write(json.dumps(obj) + "\n")
    init = json.loads(sys.stdin.readline())
    try:
        import llama_cpp
        llm = llama_cpp.Llama(model_path=init["model_path"], n_ctx=init["n_ctx"], n_threads=init["n_threads"],
                              n_threads_batch=init["n_threads"], n_gpu_layers=0, verbose=False)
    except Exception as exc:           # ImportError, a bad model file, ...
        send({"error": f"{type(exc).__name__}: {exc}"})
        return 1
    send({"ready": True, "llama_cpp": getattr(llama_cpp, "__version__", "?")})
    for line in sys.stdin:
        if not line.strip():
            continue
        req = json.loads(line)
        args = (req["prompt_tokens"], req["max_tokens"], set(req.get("stop_ids", ())), req.get("stop_newline", False))
        llm.reset()
        tokens, ms_cold = complete(llm, *args)
        tokens_warm, ms_warm = complete(llm, *args)
        send({"tokens": tokens, "ms_cold": ms_cold, "tokens_warm": tokens_warm, "ms_warm": ms_warm})
    return 0


if __name__ == "__main__":
    sys.exit(main())
