import { test } from "node:test";
import * as assert from "node:assert/strict";
import { RequestKey, StreamUpdate } from "../src/merge";
import { CancelSignal, SessionManager } from "../src/session";

const key: RequestKey = { uri: "file:///a.py", version: 1, position: { line: 0, character: 4 } };
const upd = (stable: string, k: RequestKey = key): StreamUpdate => ({ ...k, stable, draft: stable, done: false });

/** A fake server: each request gets a promise the test resolves by hand. */
function harness() {
  const pending: Array<{ key: RequestKey; signal: CancelSignal; resolve: (r: unknown) => void; reject: (e: Error) => void }> = [];
  const retriggers: RequestKey[] = [];
  const shown: Array<[RequestKey, string]> = [];
  const manager = new SessionManager(
    (k, signal) => new Promise((resolve, reject) => { pending.push({ key: k, signal, resolve, reject }); }),
    (k) => retriggers.push(k),
    (k, text) => shown.push([k, text]),
  );
  return { manager, pending, retriggers, shown };
}

const tick = () => new Promise((resolve) => setImmediate(resolve));

test("one request per key; a growing stable text re-triggers; the answer ends it", async () => {
  const { manager, pending, retriggers } = harness();
  const session = manager.begin(key);
  assert.equal(manager.begin(key), session);                  // the editor asking again reuses the request
  assert.equal(pending.length, 1);
  const waiting = session.nextChange();
  manager.onUpdate(upd("ret"));
  await waiting;                                               // the provider wakes on the first text
  assert.equal(session.text, "ret");
  assert.deepEqual(retriggers, [key]);
  manager.onUpdate(upd("ret"));                                // nothing new: no re-trigger
  manager.onUpdate(upd("return x"));
  assert.equal(retriggers.length, 2);
  assert.deepEqual(session.items, [{ text: "return x" }]);
  pending[0].resolve({ items: [{ insertText: "return x + 1" }] });
  await tick();
  assert.ok(session.done);
  assert.equal(session.text, "return x + 1");
  assert.equal(retriggers.length, 3);                          // final differs from the stream: redraw
  manager.onUpdate(upd("return x + 1 and more"));              // late notification after the answer
  assert.equal(session.text, "return x + 1");
});

test("a final answer equal to the streamed text does not redraw", async () => {
  const { manager, pending, retriggers } = harness();
  const session = manager.begin(key);
  manager.onUpdate(upd("pass"));
  pending[0].resolve([{ insertText: "pass" }]);
  await tick();
  assert.ok(session.done);
  assert.equal(retriggers.length, 1);
});

test("a new cursor position cancels the old request and ignores its updates", async () => {
  const { manager, pending, retriggers } = harness();
  const first = manager.begin(key);
  const moved = { ...key, version: 2, position: { line: 0, character: 5 } };
  const waiting = first.nextChange();
  const second = manager.begin(moved);
  await waiting;                                               // a provider waiting on the old one is released
  assert.notEqual(first, second);
  assert.equal(pending[0].signal.cancelled, true);
  assert.equal(pending[1].signal.cancelled, false);
  manager.onUpdate(upd("old text"));
  assert.equal(first.text, "");
  assert.equal(retriggers.length, 0);
  manager.onUpdate(upd("new", moved));
  assert.equal(second.text, "new");
  pending[0].resolve([{ insertText: "old answer" }]);          // the cancelled request answers late
  await tick();
  assert.equal(retriggers.length, 1);
});

test("a failed request ends the session with nothing to show", async () => {
  const logs: string[] = [];
  const manager = new SessionManager(() => Promise.reject(new Error("boom")), () => undefined, () => undefined, (m) => logs.push(m));
  const session = manager.begin(key);
  await session.nextChange();
  assert.ok(session.done);
  assert.deepEqual(session.items, []);
  assert.match(logs[0], /boom/);
});

test("a suggestion is reported shown once, with the last text handed to the editor", async () => {
  const { manager, pending, shown } = harness();
  const session = manager.begin(key);
  manager.provided(session, "");                               // nothing shown yet: no report later
  manager.onUpdate(upd("ab"));
  manager.provided(session, session.text);
  pending[0].resolve([{ insertText: "abc" }]);
  await tick();
  manager.provided(session, session.text);
  manager.accepted();
  manager.cancel();
  assert.deepEqual(shown, [[key, "abc"]]);
  const other = manager.begin({ ...key, version: 7 });
  manager.cancel();                                            // never shown: never reported
  assert.equal(shown.length, 1);
  assert.ok(other.signal.cancelled);
});

test("the user asking explicitly where an answer came asks again once (the server then adds alternatives)", async () => {
  const sent: boolean[] = [];
  const resolvers: Array<(r: unknown) => void> = [];
  const manager = new SessionManager(
    (_k, _signal, explicit) => { sent.push(explicit); return new Promise((resolve) => { resolvers.push(resolve); }); },
    () => {}, () => {},
  );
  const automatic = manager.begin(key);
  assert.equal(manager.begin(key, true), automatic);           // still answering: the explicit ask waits for it
  resolvers[0]([{ insertText: "x + 1" }]);
  await tick();
  assert.ok(automatic.done);
  const cycling = manager.begin(key, true);                    // Alt-] after the answer: a new, explicit request
  assert.notEqual(cycling, automatic);
  assert.equal(manager.begin(key), cycling);                   // the editor asking again keeps it
  resolvers[1]([{ insertText: "x + 1" }, { insertText: "x - 1" }]);
  await tick();
  assert.equal(manager.begin(key, true), cycling);             // asked again once already: no third request
  assert.deepEqual(cycling.items.map((i) => i.text), ["x + 1", "x - 1"]);
  assert.deepEqual(sent, [false, true]);
});
