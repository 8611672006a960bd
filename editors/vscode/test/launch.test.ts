import { test } from "node:test";
import * as assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { describeFailure, launcher, StderrTail } from "../src/launch";

test("the stderr tail keeps the last non-empty line across chunk boundaries", () => {
  const tail = new StderrTail(3);
  tail.push("loading\nfatal: can");
  assert.equal(tail.last(), "fatal: can");
  tail.push("not read /m\n\n  \n");
  assert.equal(tail.last(), "fatal: cannot read /m");
});

test("a command that is not there is named, and start() rejects with the same sentence", async () => {
  const failures: string[] = [];
  const start = launcher("/no/such/dllm-lsp", ["--stdio"], spawn, { onFailure: (m) => failures.push(m) });
  assert.equal(start.command, "/no/such/dllm-lsp");
  await assert.rejects(start(), /server not found: `\/no\/such\/dllm-lsp` is not on PATH/);
  assert.equal(failures.length, 1);
});

test("an exit code and stderr's last line are reported", async () => {
  const failures: string[] = [];
  const script = "console.error('starting'); console.error('fatal: the model folder /m is unreadable'); process.exit(3)";
  const start = launcher(process.execPath, ["-e", script], spawn, { onFailure: (m) => failures.push(m) });
  const proc = await start();
  await new Promise((resolve) => proc.on("close", resolve));
  await new Promise((resolve) => setTimeout(resolve, 50));
  assert.equal(failures.length, 1);
  assert.match(failures[0], /exited with code 3: fatal: the model folder \/m is unreadable$/);
});

test("a clean exit is no failure", async () => {
  const failures: string[] = [];
  const proc = await launcher(process.execPath, ["-e", "process.exit(0)"], spawn, { onFailure: (m) => failures.push(m) })();
  await new Promise((resolve) => proc.on("close", resolve));
  assert.deepEqual(failures, []);
  assert.equal(describeFailure({ command: "x", args: [], signal: "SIGSEGV" }), "`x` was killed by SIGSEGV");
});
