import { test } from "node:test";
import * as assert from "node:assert/strict";
import { FakeLanguageClient, state } from "./fake_vscode";   // must come first: installs the fakes
import { activate } from "../src/extension";

const tick = () => new Promise((resolve) => setImmediate(resolve));

function editorAt(uri: string, version: number, line: number, character: number, languageId = "python") {
  const document = { uri: { toString: () => uri }, version, languageId };
  state.activeTextEditor = { document, selection: { active: { line, character } } };
  return { document, position: { line, character } };
}

const token = () => ({ isCancellationRequested: false, onCancellationRequested: () => ({ dispose() {} }) });

test("activate: starts the server with the mapped settings and streams a suggestion into the editor", async () => {
  activate({ subscriptions: [] } as any);
  const client = FakeLanguageClient.last;
  assert.deepEqual(client.serverOptions.command, "/venv/bin/python");
  assert.deepEqual(client.serverOptions.args, ["-m", "dllm_lsp.cli", "--stdio"]);
  assert.deepEqual(client.clientOptions.initializationOptions,
    { model: "/m", threshold: 0.8, enabledLanguages: { "*": true, markdown: false } });

  client.notify("dllm/status", { state: "ready", message: "", model: "/m", lastLatencyMs: 12.2 });
  assert.equal(state.statusItem.text, "$(check) dLLM 12 ms");

  const provider = state.providers[0];
  const { document, position } = editorAt("file:///a.py", 3, 1, 4);
  const first = provider.provideInlineCompletionItems(document, position, { triggerKind: 1 }, token());
  await tick();
  assert.equal(client.requests.length, 1);
  assert.equal(client.requests[0].method, "textDocument/inlineCompletion");
  assert.deepEqual(client.requests[0].params.position, { line: 1, character: 4 });
  assert.equal(client.requests[0].params.context.triggerKind, 2);

  const update = { uri: "file:///a.py", version: 3, position: { line: 1, character: 4 }, draft: "", done: false };
  client.notify("dllm/inlineCompletionUpdate", { ...update, stable: "return" });
  const items = await first;                                  // the waiting provider returns the first stable text
  assert.equal(items.length, 1);
  assert.equal(items[0].insertText, "return");
  assert.ok(state.executed.includes("editor.action.inlineSuggest.trigger"));

  state.executed.length = 0;
  client.notify("dllm/inlineCompletionUpdate", { ...update, stable: "return a +" });
  assert.deepEqual(state.executed, ["editor.action.inlineSuggest.trigger"]);   // grows in place
  const again = await provider.provideInlineCompletionItems(document, position, { triggerKind: 0 }, token());
  assert.equal(again[0].insertText, "return a +");
  assert.equal(client.requests.length, 1);                    // no second request for the same position

  client.requests[0].resolve([{ insertText: "return a + b" }]);
  await tick();
  const final = await provider.provideInlineCompletionItems(document, position, { triggerKind: 0 }, token());
  assert.equal(final[0].insertText, "return a + b");
  assert.equal(client.requests.length, 1);                    // our re-triggers are not the user's Alt-]

  // accepting runs the item's command: shown then accepted are reported, nothing else is sent
  await state.commands.get(final[0].command.command)!(...final[0].command.arguments);
  await tick();
  assert.deepEqual(client.notifications.map((n) => n.method), ["dllm/didShowCompletion", "dllm/didAcceptCompletion"]);
  assert.deepEqual(client.notifications[0].params, { uri: "file:///a.py", position: { line: 1, character: 4 }, text: "return a + b" });
  assert.deepEqual(client.notifications[1].params, { uri: "file:///a.py", position: { line: 1, character: 4 }, acceptedLength: 12 });
});

test("the user's Alt-] at a shown suggestion asks again, explicitly, and cycles through the items", async () => {
  const client = FakeLanguageClient.last;
  const provider = state.providers[0];
  const before = client.requests.length;
  const { document, position } = editorAt("file:///c.py", 1, 0, 2);
  const shown = provider.provideInlineCompletionItems(document, position, { triggerKind: 1 }, token());
  await tick();
  client.requests[before].resolve([{ insertText: "x + 1" }]);
  assert.equal((await shown)[0].insertText, "x + 1");
  if (state.executed.includes("editor.action.inlineSuggest.trigger")) {     // VS Code answering our re-trigger
    await provider.provideInlineCompletionItems(document, position, { triggerKind: 0 }, token());
  }
  assert.equal(client.requests.length, before + 1);
  const cycling = provider.provideInlineCompletionItems(document, position, { triggerKind: 0 }, token());
  await tick();
  assert.equal(client.requests.length, before + 2);
  assert.equal(client.requests[before + 1].params.context.triggerKind, 1);    // Invoked: the server adds alternatives
  client.requests[before + 1].resolve({ items: [{ insertText: "x + 1" }, { insertText: "x - 1" }, { insertText: "y" }] });
  assert.deepEqual((await cycling).map((i: any) => i.insertText), ["x + 1", "x - 1", "y"]);
});

test("disabled languages and the toggle stop requests; settings changes are pushed to the server", async () => {
  const client = FakeLanguageClient.last;
  const provider = state.providers[0];
  const before = client.requests.length;
  const md = editorAt("file:///r.md", 1, 0, 0, "markdown");
  assert.equal(await provider.provideInlineCompletionItems(md.document, md.position, { triggerKind: 0 }, token()), undefined);

  await state.commands.get("dllm.toggle")!();
  assert.equal(state.config.enable, false);
  assert.equal(state.statusItem.text, "$(circle-slash) dLLM");
  const py = editorAt("file:///a.py", 9, 0, 0);
  assert.equal(await provider.provideInlineCompletionItems(py.document, py.position, { triggerKind: 0 }, token()), undefined);
  assert.equal(client.requests.length, before);
  const pushed = client.notifications.filter((n) => n.method === "workspace/didChangeConfiguration");
  assert.equal(pushed.length, 1);
  assert.deepEqual(pushed[0].params.settings.dllm.threshold, 0.8);
});

test("a server that cannot start turns the status bar to error with the reason, said once", async () => {
  const saved = state.config["server.command"];
  state.config.enable = true;                                            // the test before may have toggled it off
  state.config["server.command"] = ["/no/such/dllm-lsp", "--stdio"];
  state.errors.length = 0;
  try {
    activate({ subscriptions: [] } as any);
    const client = FakeLanguageClient.last;
    await assert.rejects(client.serverOptions(), /server not found/);      // what vscode-languageclient calls
    assert.equal(state.statusItem.text, "$(error) dLLM");
    assert.match(state.statusItem.tooltip, /server not found: `\/no\/such\/dllm-lsp` is not on PATH/);
    await assert.rejects(client.serverOptions(), /server not found/);      // the client retries: no second message
    assert.equal(state.errors.length, 1);
    assert.match(state.errors[0], /^dLLM: server not found/);
  } finally {
    state.config["server.command"] = saved;
  }
});

test("a cursor that moves is reported with dllm/cursor; selections and disabled languages are not", async () => {
  state.config.enable = true;
  state.selectionListeners.length = 0;
  activate({ subscriptions: [] } as any);
  const client = FakeLanguageClient.last;
  const listener = state.selectionListeners[state.selectionListeners.length - 1];
  const moved = (languageId: string, line: number, character: number, isEmpty = true, count = 1) => listener({
    textEditor: { document: { uri: { toString: () => "file:///c.py" }, version: 1, languageId } },
    selections: Array.from({ length: count }, () => ({ isEmpty, active: { line, character } })),
  });
  moved("python", 7, 3);
  moved("python", 8, 0, false);            // a selection: the user is not about to type there
  moved("python", 9, 0, true, 2);          // several cursors
  moved("markdown", 2, 0);                 // disabled in the settings
  const hints = client.notifications.filter((n) => n.method === "dllm/cursor");
  assert.deepEqual(hints.map((n) => n.params), [{ uri: "file:///c.py", position: { line: 7, character: 3 } }]);
});

test("accept word / accept line are bound as in Neovim and reported as partial accepts", async () => {
  const pkg = JSON.parse(require("fs").readFileSync(require("path").join(__dirname, "..", "..", "package.json"), "utf8"));
  const bound = Object.fromEntries(pkg.contributes.keybindings.map((k: any) => [k.command, k]));
  assert.equal(bound["editor.action.inlineSuggest.acceptNextWord"].key, "alt+right");
  assert.equal(bound["editor.action.inlineSuggest.acceptNextLine"].key, "alt+down");
  assert.match(bound["editor.action.inlineSuggest.acceptNextLine"].when, /inlineSuggestionVisible/);

  state.config.enable = true;
  state.providers.length = 0;
  activate({ subscriptions: [] } as any);
  const client = FakeLanguageClient.last;
  const provider = state.providers[0];
  const { document, position } = editorAt("file:///b.py", 1, 2, 0);
  const pending = provider.provideInlineCompletionItems(document, position, { triggerKind: 1 }, token());
  await tick();
  client.requests[0].resolve([{ insertText: "total = sum(values)" }]);
  const items = await pending;
  provider.handleDidPartiallyAcceptCompletionItem(items[0], { acceptedLength: 6, kind: 1 });
  provider.handleDidPartiallyAcceptCompletionItem({ insertText: "not ours" }, 3);   // an item it never gave: ignored
  const accepts = client.notifications.filter((n) => n.method === "dllm/didAcceptCompletion");
  assert.deepEqual(accepts.map((n) => n.params), [{ uri: "file:///b.py", position: { line: 2, character: 0 }, acceptedLength: 6 }]);
});
