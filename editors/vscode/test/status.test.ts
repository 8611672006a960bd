import { test } from "node:test";
import * as assert from "node:assert/strict";
import { parseStatus, statusView } from "../src/status";

test("ready shows the last latency, loading spins, error is flagged", () => {
  const ready = statusView(parseStatus({ state: "ready", message: "", model: "tiny", lastLatencyMs: 41.6 }), true);
  assert.equal(ready.text, "$(check) dLLM 42 ms");
  assert.match(ready.tooltip, /model: tiny/);
  assert.equal(ready.error, false);
  assert.equal(statusView(parseStatus({ state: "ready", lastLatencyMs: null }), true).text, "$(check) dLLM");
  assert.equal(statusView(parseStatus({ state: "loading", message: "loading tiny" }), true).text, "$(sync~spin) dLLM loading");
  const error = statusView(parseStatus({ state: "error", message: "model not found" }), true);
  assert.equal(error.error, true);
  assert.match(error.tooltip, /model not found/);
});

test("off wins over the server state; malformed payloads read as errors", () => {
  assert.equal(statusView(parseStatus({ state: "ready", lastLatencyMs: 10 }), false).text, "$(circle-slash) dLLM");
  const bad = parseStatus({ state: "sleeping" });
  assert.equal(bad.state, "error");
  assert.equal(parseStatus(null).state, "error");
});
