import { test } from "node:test";
import * as assert from "node:assert/strict";
import { isLanguageEnabled, needsRestart, serverCommand, toServerSettings } from "../src/settings";

test("server settings keep the server's camelCase names and drop client-only keys", () => {
  const { settings, problems } = toServerSettings({
    enable: true, "server.command": ["x"], "server.pythonPath": "/usr/bin/python3",
    model: "/models/tiny", device: "cpu", dtype: "float32", policy: "entropy", threshold: 0.75,
    blockSize: null, maxNewTokensLine: 24, maxNewTokensBlock: 96, debounceMs: 40,
    enabledLanguages: { "*": true, markdown: false }, streaming: false, logLevel: "debug",
  });
  assert.deepEqual(problems, []);
  assert.deepEqual(settings, {
    model: "/models/tiny", device: "cpu", dtype: "float32", policy: "entropy", threshold: 0.75,
    maxNewTokensLine: 24, maxNewTokensBlock: 96, debounceMs: 40,
    enabledLanguages: { "*": true, markdown: false }, streaming: false, logLevel: "debug",
  });
});

test("values of the wrong type are dropped with a message naming the setting", () => {
  const { settings, problems } = toServerSettings({
    threshold: "high", maxNewTokensLine: 2.5, streaming: "yes", enabledLanguages: { python: "on", go: false }, model: "default",
  });
  assert.deepEqual(settings, { model: "default", enabledLanguages: { go: false } });
  assert.equal(problems.length, 4);
  assert.ok(problems[0].startsWith("dllm.threshold"), problems[0]);
  assert.ok(problems.some((p) => p.startsWith("dllm.maxNewTokensLine")));
  assert.ok(problems.some((p) => p.startsWith("dllm.streaming")));
  assert.ok(problems.some((p) => p.startsWith("dllm.enabledLanguages.python")));
});

test("per-language switch: explicit id, then '*', then on", () => {
  const table = { "*": false, python: true };
  assert.equal(isLanguageEnabled(table, "python"), true);
  assert.equal(isLanguageEnabled(table, "rust"), false);
  assert.equal(isLanguageEnabled({ markdown: false }, "rust"), true);
  assert.equal(isLanguageEnabled({ markdown: false }, "markdown"), false);
  assert.equal(isLanguageEnabled(undefined, "go"), true);
});

test("server command: explicit command, then python -m, then dllm-lsp from PATH", () => {
  assert.deepEqual(serverCommand({ "server.command": ["/opt/bin/dllm-lsp", "--stdio"], "server.pythonPath": "/py" }),
    { command: "/opt/bin/dllm-lsp", args: ["--stdio"] });
  assert.deepEqual(serverCommand({ "server.command": [], "server.pythonPath": "/venv/bin/python" }),
    { command: "/venv/bin/python", args: ["-m", "dllm_lsp.cli", "--stdio"] });
  assert.deepEqual(serverCommand({ "server.command": [], "server.pythonPath": "" }), { command: "dllm-lsp", args: ["--stdio"] });
  assert.deepEqual(serverCommand({ "server.command": ["", "x"] }), { command: "dllm-lsp", args: ["--stdio"] });
});

test("only settings that change how the server starts restart it", () => {
  assert.equal(needsRestart(["threshold", "enabledLanguages"]), false);
  assert.equal(needsRestart(["server.pythonPath"]), true);
  assert.equal(needsRestart(["model", "device"]), false);   // the server reloads the model itself
});
