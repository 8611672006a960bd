import { test } from "node:test";
import * as assert from "node:assert/strict";
import { applyFinal, applyUpdate, EMPTY_STATE, itemsFromResult, RequestKey, shownChanged, shownText, StreamUpdate } from "../src/merge";

const key: RequestKey = { uri: "file:///a.py", version: 3, position: { line: 4, character: 8 } };
const upd = (stable: string, extra: Partial<StreamUpdate> = {}): StreamUpdate =>
  ({ ...key, stable, draft: stable + "??", done: false, ...extra });

test("stable text grows the shown suggestion", () => {
  let state = applyUpdate(EMPTY_STATE, key, upd("ret"));
  assert.equal(shownText(state), "ret");
  const next = applyUpdate(state, key, upd("return a"));
  assert.equal(shownText(next), "return a");
  assert.ok(shownChanged(state, next));
  assert.equal(next.draft, "return a??");
});

test("a stale, shorter or diverging update never changes what is shown", () => {
  const state = applyUpdate(EMPTY_STATE, key, upd("return a"));
  assert.equal(applyUpdate(state, key, upd("return")), state);          // reordered, shorter
  assert.equal(applyUpdate(state, key, upd("return a")), state);        // same
  assert.equal(applyUpdate(state, key, upd("yield bbbbbbb")), state);   // does not extend
});

test("updates for another version, position or document are ignored", () => {
  const state = applyUpdate(EMPTY_STATE, key, upd("x"));
  assert.equal(applyUpdate(state, key, upd("x = 1", { version: 2 })), state);
  assert.equal(applyUpdate(state, key, upd("x = 1", { position: { line: 4, character: 9 } })), state);
  assert.equal(applyUpdate(state, key, upd("x = 1", { uri: "file:///b.py" })), state);
});

test("the final answer replaces the streamed text, even when post-processing trimmed it", () => {
  let state = applyUpdate(EMPTY_STATE, key, upd("return a + b\nprint("));
  state = applyFinal(state, [{ text: "return a + b" }]);
  assert.equal(shownText(state), "return a + b");
  assert.equal(applyUpdate(state, key, upd("return a + b\nprint(1)")), state);  // late update after the answer
  assert.equal(shownText(applyFinal(EMPTY_STATE, [])), "");
});

test("done=true without growth is remembered but shows nothing new", () => {
  const state = applyUpdate(EMPTY_STATE, key, upd("abc"));
  const done = applyUpdate(state, key, upd("abc", { done: true }));
  assert.equal(done.streamDone, true);
  assert.equal(shownChanged(state, done), false);
});

test("inline completion results: arrays, lists, string values; empty items dropped", () => {
  const range = { start: { line: 1, character: 0 }, end: { line: 1, character: 4 } };
  assert.deepEqual(itemsFromResult([{ insertText: "a" }, { insertText: "" }, { insertText: { kind: "snippet", value: "b" }, range }]),
    [{ text: "a" }, { text: "b", range }]);
  assert.deepEqual(itemsFromResult({ items: [{ insertText: "c" }] }), [{ text: "c" }]);
  assert.deepEqual(itemsFromResult(null), []);
  assert.deepEqual(itemsFromResult({ items: null }), []);
});
