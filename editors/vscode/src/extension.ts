/**
 * VS Code glue: starts `dllm-lsp --stdio` with vscode-languageclient and shows its suggestions as
 * inline (ghost-text) completions that grow in place.
 *
 * Everything that can be decided without VS Code lives in pure modules (settings, merge, session,
 * status) that are unit-tested under Node; this file only wires them to the editor:
 *  - an InlineCompletionItemProvider sends `textDocument/inlineCompletion` (vscode-languageclient 9
 *    has no built-in inline completion, so ours is the only provider) and, when a newer `stable`
 *    text arrives in `dllm/inlineCompletionUpdate` for the same position, re-runs
 *    `editor.action.inlineSuggest.trigger` so the editor asks again and shows the longer text;
 *  - `dllm/status` drives the status bar item (loading / ready + last latency / error); when the
 *    server cannot start (not found, exited with code N) the item turns error with the reason and
 *    stderr's last line (launch.ts), and an error message says it once;
 *  - shown/accepted suggestions are reported with `dllm/didShowCompletion` and
 *    `dllm/didAcceptCompletion` (the server only keeps local counts);
 *  - a cursor that moves (a click, the arrow keys) is reported with `dllm/cursor`, so the server
 *    computes the context there while the user reads, before the first key (it waits for the
 *    cursor to rest; each move restarts its timer);
 *  - commands: toggle, trigger now, restart; Alt+Right / Alt+Down accept the suggestion's next word /
 *    line (VS Code's own partial accepts, reported to the server as accepts of that length).
 */
import * as vscode from "vscode";
import { spawn } from "node:child_process";
import { LanguageClient, LanguageClientOptions, ServerOptions, State } from "vscode-languageclient/node";

import { launcher } from "./launch";

import { RequestKey, StreamUpdate } from "./merge";
import { CancelSignal, SessionManager } from "./session";
import { isLanguageEnabled, needsRestart, SECTION_KEYS, serverCommand, toServerSettings } from "./settings";
import { parseStatus, ServerStatus, statusView } from "./status";

const ACCEPTED_COMMAND = "dllm._accepted";

let client: LanguageClient | undefined;
let sessions: SessionManager | undefined;
let output: vscode.OutputChannel;
let statusItem: vscode.StatusBarItem;
let lastStatus: ServerStatus = { state: "starting" };
let lastFailure: string | undefined;

/** The `dllm` section as a flat object keyed like package.json (`server.command`, `model`, ...). */
function readSection(): Record<string, unknown> {
  const config = vscode.workspace.getConfiguration("dllm");
  const raw: Record<string, unknown> = {};
  for (const key of SECTION_KEYS) raw[key] = config.get(key);
  return raw;
}

function enabled(): boolean {
  return vscode.workspace.getConfiguration("dllm").get<boolean>("enable", true);
}

function mappedSettings(): Record<string, unknown> {
  const { settings, problems } = toServerSettings(readSection());
  for (const problem of problems) output.appendLine(`[settings] ${problem}`);
  return settings;
}

function showStatus(status: ServerStatus): void {
  lastStatus = status;
  const view = statusView(status, enabled());
  statusItem.text = view.text;
  statusItem.tooltip = view.tooltip;
  statusItem.backgroundColor = view.error ? new vscode.ThemeColor("statusBarItem.errorBackground") : undefined;
  statusItem.show();
}

function keyOf(document: vscode.TextDocument, position: vscode.Position): RequestKey {
  return { uri: document.uri.toString(), version: document.version, position: { line: position.line, character: position.character } };
}

/** Is `key` still what the user looks at (same document version and cursor)? */
function isCurrent(key: RequestKey): boolean {
  const editor = vscode.window.activeTextEditor;
  if (!editor) return false;
  const cursor = editor.selection.active;
  return editor.document.uri.toString() === key.uri && editor.document.version === key.version &&
    cursor.line === key.position.line && cursor.character === key.position.character;
}

/** `dllm/cursor` for a selection change: one empty selection in an enabled document, else nothing. */
function sendCursorHint(event: vscode.TextEditorSelectionChangeEvent): void {
  const { textEditor, selections } = event;
  if (!client || !enabled() || selections.length !== 1 || !selections[0].isEmpty) return;
  const document = textEditor.document;
  if (!isLanguageEnabled(readSection().enabledLanguages, document.languageId)) return;
  const active = selections[0].active;
  void client.sendNotification("dllm/cursor", { uri: document.uri.toString(), position: { line: active.line, character: active.character } });
}

async function sendInlineRequest(key: RequestKey, signal: CancelSignal, explicit: boolean): Promise<unknown> {
  if (!client) return null;
  const source = new vscode.CancellationTokenSource();
  signal.onCancel(() => source.cancel());
  try {
    return await client.sendRequest("textDocument/inlineCompletion", {
      textDocument: { uri: key.uri },
      position: key.position,
      context: { triggerKind: explicit ? 1 : 2 },
    }, source.token);
  } finally {
    source.dispose();
  }
}

function makeProvider(): vscode.InlineCompletionItemProvider {
  const itemKeys = new WeakMap<vscode.InlineCompletionItem, RequestKey>();   // for a partial accept
  // Our own re-trigger (the streamed text grew) reaches the provider as an explicit one, as the
  // user's Alt-] does; only the user's asks the server for alternatives.
  let retriggered = false;
  sessions = new SessionManager(
    (key, signal, explicit) => sendInlineRequest(key, signal, explicit),
    (key) => {
      if (!isCurrent(key)) return;
      retriggered = true;
      void vscode.commands.executeCommand("editor.action.inlineSuggest.trigger");
    },
    (key, text) => void client?.sendNotification("dllm/didShowCompletion", { uri: key.uri, position: key.position, text }),
    (message) => output.appendLine(message),
  );
  return {
    async provideInlineCompletionItems(document, position, context, token) {
      if (!client || !enabled() || !isLanguageEnabled(readSection().enabledLanguages, document.languageId)) return undefined;
      const explicit = context.triggerKind === vscode.InlineCompletionTriggerKind.Invoke && !retriggered;
      retriggered = false;
      const manager = sessions!;
      const session = manager.begin(keyOf(document, position), explicit);
      if (!session.text && !session.done) {
        // nothing to show yet: wait for the first stable text or the answer (or VS Code giving up)
        await Promise.race([session.nextChange(), new Promise<void>((resolve) => token.onCancellationRequested(() => resolve()))]);
      }
      if (token.isCancellationRequested) return undefined;
      const items = session.items.map((item) => {
        const range = item.range
          ? new vscode.Range(item.range.start.line, item.range.start.character, item.range.end.line, item.range.end.character)
          : new vscode.Range(position, position);
        const completion = new vscode.InlineCompletionItem(item.text, range);
        completion.command = { title: "accepted", command: ACCEPTED_COMMAND, arguments: [session.key, [...item.text].length] };
        itemKeys.set(completion, session.key);
        return completion;
      });
      manager.provided(session, session.text);
      return items;
    },
    // accept word / accept line (VS Code's acceptNextWord / acceptNextLine, bound in package.json as
    // the Neovim plugin binds them): reported as an accept of that many characters
    handleDidPartiallyAcceptCompletionItem(item: vscode.InlineCompletionItem, info: number | { acceptedLength: number }) {
      const key = itemKeys.get(item);
      const acceptedLength = typeof info === "number" ? info : info?.acceptedLength;
      if (key && typeof acceptedLength === "number") {
        void client?.sendNotification("dllm/didAcceptCompletion", { uri: key.uri, position: key.position, acceptedLength });
      }
    },
  } as vscode.InlineCompletionItemProvider;
}

function reportFailure(message: string): void {
  showStatus({ state: "error", message });
  output.appendLine(`[server] ${message}`);
  if (message !== lastFailure) {
    lastFailure = message;
    void vscode.window.showErrorMessage?.(`dLLM: ${message}`);
  }
}

function startClient(context: vscode.ExtensionContext): LanguageClient {
  const { command, args } = serverCommand(readSection());
  const serverOptions: ServerOptions = launcher(command, args, spawn, {
    onStderr: (text) => output.append?.(text),
    onFailure: reportFailure,
  });
  const clientOptions: LanguageClientOptions = {
    documentSelector: [{ scheme: "file" }, { scheme: "untitled" }],
    initializationOptions: mappedSettings(),
    outputChannel: output,
    middleware: {
      workspace: {
        // the server may pull section `dllm`: answer with the mapped (server-side) names
        configuration: (params, token, next) =>
          params.items.map((item) => (item.section === "dllm" ? mappedSettings() : null)),
      },
    },
  };
  const languageClient = new LanguageClient("dllm", "dLLM", serverOptions, clientOptions);
  languageClient.onNotification("dllm/status", (params) => showStatus(parseStatus(params)));
  languageClient.onNotification("dllm/inlineCompletionUpdate", (params: StreamUpdate) => sessions?.onUpdate(params));
  languageClient.onDidChangeState((event) => {
    if (event.newState === State.Stopped && lastStatus.state !== "error") {
      showStatus({ state: "stopped", message: "the server stopped; run `dLLM: Restart language server`" });
    }
  });
  showStatus({ state: "starting" });
  languageClient.start().catch((error) => {
    if (lastStatus.state !== "error") {
      reportFailure(`could not start \`${command} ${args.join(" ")}\`: ${error?.message ?? error}`);
    }
  });
  return languageClient;
}

async function restart(context: vscode.ExtensionContext): Promise<void> {
  sessions?.cancel();
  const old = client;
  client = undefined;
  lastFailure = undefined;                   // a restart may fail again: say so again
  if (old) await old.stop().catch(() => undefined);
  client = startClient(context);
}

export function activate(context: vscode.ExtensionContext): void {
  output = vscode.window.createOutputChannel("dLLM");
  statusItem = vscode.window.createStatusBarItem(vscode.StatusBarAlignment.Right, 100);
  statusItem.command = "dllm.toggle";
  context.subscriptions.push(output, statusItem);

  client = startClient(context);
  context.subscriptions.push(
    vscode.languages.registerInlineCompletionItemProvider({ pattern: "**" }, makeProvider()),
    vscode.window.onDidChangeTextEditorSelection(sendCursorHint),
    vscode.commands.registerCommand("dllm.toggle", async () => {
      await vscode.workspace.getConfiguration("dllm").update("enable", !enabled(), vscode.ConfigurationTarget.Global);
    }),
    vscode.commands.registerCommand("dllm.trigger", () => vscode.commands.executeCommand("editor.action.inlineSuggest.trigger")),
    vscode.commands.registerCommand("dllm.restart", () => restart(context)),
    vscode.commands.registerCommand(ACCEPTED_COMMAND, (key: RequestKey, acceptedLength: number) => {
      sessions?.accepted();
      void client?.sendNotification("dllm/didAcceptCompletion", { uri: key.uri, position: key.position, acceptedLength });
    }),
    vscode.workspace.onDidChangeConfiguration((event) => {
      if (!event.affectsConfiguration("dllm")) return;
      const changed = SECTION_KEYS.filter((key) => event.affectsConfiguration(`dllm.${key}`));
      if (changed.includes("enable")) {
        if (!enabled()) sessions?.cancel();
        showStatus(lastStatus);
      }
      if (needsRestart(changed)) void restart(context);
      else if (client) void client.sendNotification("workspace/didChangeConfiguration", { settings: { dllm: mappedSettings() } });
    }),
  );
}

export async function deactivate(): Promise<void> {
  sessions?.cancel();
  if (client) await client.stop();
}
