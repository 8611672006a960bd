/**
 * Starting the server process ourselves, so a failure can say why: not found (ENOENT), exited
 * with code N, and the last line the server wrote to stderr.
 *
 * Pure Node (no `vscode` import), unit-tested with real child processes. `launcher(...)` is a
 * vscode-languageclient ServerOptions function (it resolves with the spawned ChildProcess once
 * it runs); it also carries `command` and `args` so callers can show what it starts. Every
 * stderr chunk is passed on (the extension writes it to its output channel) and the last
 * non-empty lines are kept; `onFailure` gets one sentence when the process cannot be spawned or
 * exits with a non-zero code or a signal before it was stopped.
 */
import type { ChildProcess, SpawnOptions } from "node:child_process";

export class StderrTail {
  private partial = "";
  private lines: string[] = [];
  constructor(private keep = 20) {}

  push(chunk: string): void {
    const parts = (this.partial + chunk).split(/\r?\n/);
    this.partial = parts.pop() ?? "";
    for (const line of parts) if (line.trim()) this.lines.push(line.trim());
    if (this.lines.length > this.keep) this.lines.splice(0, this.lines.length - this.keep);
  }

  last(): string | undefined {
    return this.partial.trim() || this.lines[this.lines.length - 1];
  }
}

export interface Failure {
  command: string;
  args: string[];
  spawnError?: { code?: string; message: string };
  exitCode?: number | null;
  signal?: string | null;
  stderrLast?: string;
}

export function describeFailure(f: Failure): string {
  const shown = [f.command, ...f.args].join(" ");
  if (f.spawnError) {
    if (f.spawnError.code === "ENOENT") {
      return `server not found: \`${f.command}\` is not on PATH or not executable (set dllm.server.command)`;
    }
    return `could not start \`${shown}\`: ${f.spawnError.message}`;
  }
  const how = typeof f.exitCode === "number" ? `exited with code ${f.exitCode}` : `was killed by ${f.signal ?? "a signal"}`;
  return `\`${shown}\` ${how}` + (f.stderrLast ? `: ${f.stderrLast}` : "");
}

type Spawn = (command: string, args: string[], options: SpawnOptions) => ChildProcess;

export interface Launcher {
  (): Promise<ChildProcess>;
  command: string;
  args: string[];
}

export function launcher(command: string, args: string[], spawn: Spawn,
                         hooks: { onStderr?: (text: string) => void; onFailure: (message: string) => void }): Launcher {
  const start = (() => new Promise<ChildProcess>((resolve, reject) => {
    const tail = new StderrTail();
    const proc = spawn(command, args, { stdio: ["pipe", "pipe", "pipe"] });
    let spawned = false;
    proc.stderr?.setEncoding("utf8");
    proc.stderr?.on("data", (chunk: string) => {
      tail.push(chunk);
      hooks.onStderr?.(chunk);
    });
    proc.on("spawn", () => {
      spawned = true;
      resolve(proc);
    });
    proc.on("error", (error: NodeJS.ErrnoException) => {
      if (spawned) return;
      const message = describeFailure({ command, args, spawnError: { code: error.code, message: error.message } });
      hooks.onFailure(message);
      reject(new Error(message));
    });
    proc.on("exit", (code, signal) => {
      if (code === 0 || (code === null && (signal === "SIGTERM" || signal === "SIGKILL") && proc.killed)) return;
      const finish = () => hooks.onFailure(describeFailure({ command, args, exitCode: code, signal, stderrLast: tail.last() }));
      // stderr may still hold the last line: let it drain first
      if (proc.stderr && !proc.stderr.readableEnded) proc.stderr.once("end", finish);
      else finish();
    });
  })) as Launcher;
  start.command = command;
  start.args = args;
  return start;
}
