"""Request bodies as real clients send them, shared by the HTTP tests."""

LLAMA_VSCODE_BODY = {     # exactly what llama.vscode's createRequestPayload sends (src/llama-server.ts)
    "input_prefix": "def add(a, b):\n", "input_suffix": "\n\nprint(add(1, 2))\n",
    "input_extra": [{"text": "def sub(a, b):\n    return a - b\n", "time": 1717000000000, "filename": "/w/ops.py"}],
    "prompt": "    return ", "n_predict": 128, "top_k": 40, "top_p": 0.99, "stream": False,
    "samplers": ["top_k", "top_p", "infill"], "cache_prompt": True, "n_indent": 4,
    "t_max_prompt_ms": 500, "t_max_predict_ms": 1000}
