"""The repository context end to end over stdio: a client with a workspace folder, the server
reading the imported module from the disk and the edited chunk of another open document, both
reaching a llama.cpp backend as `input_extra` files (the fake /infill here records the bodies)."""
import asyncio
import json
import tempfile

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from lsprotocol import types

from e2e_helpers import capabilities, config, inline_params, insert, make_client, open_doc, wait_for_state

pytestmark = pytest.mark.asyncio(loop_scope="module")

UTIL = "def helper(a, b=2):\n    return a + b\n\n\ndef unused():\n    pass\n"
MAIN = "from .util import helper\n\n\ndef run():\n    x = helper(1)\n    return \n"
NOTES = "".join(f"line_{i} = {i}\n" for i in range(60))


async def fake_infill(bodies):
    async def handler(request):
        bodies.append(await request.json())
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b"data: " + json.dumps({"content": "x", "stop": True}).encode() + b"\n\n")
        return resp
    app = web.Application()
    app.router.add_post("/infill", handler)
    server = TestServer(app)
    await server.start_server()
    return server


async def test_imported_definitions_and_recent_edits_reach_the_backend_as_repo_files(tmp_path):
    root = tmp_path / "proj"
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "util.py").write_text(UTIL)           # on disk only: never opened
    bodies = []
    server = await fake_infill(bodies)
    client = make_client()
    cfg = config(tempfile.mkdtemp(prefix="dllm-state-"))
    await client.start_io(*cfg.server_command, env=cfg.server_env)
    try:
        await client.initialize_session(types.InitializeParams(
            capabilities=capabilities(), root_uri=root.as_uri(),
            workspace_folders=[types.WorkspaceFolder(uri=root.as_uri(), name="proj")],
            initialization_options={"dllm": {"warmUp": False, "repoTokens": 512, "backend": {"url": str(server.make_url("")),
                                                                           "api": "llamacpp"}}}))
        assert (await wait_for_state(client, "ready", "error", timeout=60)).state == "ready"
        notes, main = (root / "notes.py").as_uri(), (root / "pkg" / "main.py").as_uri()
        open_doc(client, notes, NOTES)
        insert(client, notes, 2, 40, 0, "edited = True\n")          # an edit in another document
        open_doc(client, main, MAIN)
        result = await asyncio.wait_for(client.text_document_inline_completion_async(inline_params(main, 5, 11)), 60)
        assert result is not None
        extra = {e["filename"]: e["text"] for e in bodies[-1]["input_extra"]}
        assert extra["pkg/util.py"] == "def helper(a, b=2):\n    return a + b\n"      # only the imported name
        assert "edited = True" in extra["notes.py"] and "line_39 = 39" in extra["notes.py"]
        assert "line_0 = 0" not in extra["notes.py"]                 # the chunk around the edit, not the file
        assert list(extra)[-1] == "pkg/util.py"                      # the definitions nearest the file
        assert bodies[-1]["input_prefix"].startswith("from .util import helper")
    finally:
        await client.shutdown_session()
        await client.stop()
        await server.close()
