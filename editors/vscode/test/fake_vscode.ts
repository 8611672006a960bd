/**
 * A minimal stand-in for the `vscode` and `vscode-languageclient/node` modules, enough to run
 * extension.ts under plain Node: it records registrations, commands, requests and notifications.
 */
import Module = require("node:module");

export class FakeLanguageClient {
  static last: FakeLanguageClient;
  handlers = new Map<string, (params: any) => void>();
  requests: Array<{ method: string; params: any; token: any; resolve: (r: unknown) => void }> = [];
  notifications: Array<{ method: string; params: any }> = [];
  started = false;
  constructor(public id: string, public name: string, public serverOptions: any, public clientOptions: any) {
    FakeLanguageClient.last = this;
  }
  onNotification(method: string, handler: (params: any) => void) { this.handlers.set(method, handler); }
  onDidChangeState() { return { dispose() {} }; }
  async start() { this.started = true; }
  async stop() { this.started = false; }
  sendRequest(method: string, params: any, token: any) {
    return new Promise((resolve) => this.requests.push({ method, params, token, resolve }));
  }
  async sendNotification(method: string, params: any) { this.notifications.push({ method, params }); }
  notify(method: string, params: any) { this.handlers.get(method)!(params); }
}

export const state = {
  config: { enable: true, "server.command": [], "server.pythonPath": "/venv/bin/python", model: "/m", threshold: 0.8,
            enabledLanguages: { "*": true, markdown: false } } as Record<string, any>,
  commands: new Map<string, (...args: any[]) => any>(),
  executed: [] as string[],
  providers: [] as any[],
  statusItem: undefined as any,
  activeTextEditor: undefined as any,
  configListeners: [] as Array<(event: any) => void>,
  selectionListeners: [] as Array<(event: any) => void>,
  errors: [] as string[],
};

class Range { constructor(public startLine: number, public startChar: any, public endLine?: number, public endChar?: number) {} }
class CancellationTokenSource {
  cancelled = false;
  token = { isCancellationRequested: false, onCancellationRequested: (_: () => void) => ({ dispose() {} }) };
  cancel() { this.cancelled = true; this.token.isCancellationRequested = true; }
  dispose() {}
}

export const vscode = {
  StatusBarAlignment: { Left: 1, Right: 2 },
  ConfigurationTarget: { Global: 1 },
  InlineCompletionTriggerKind: { Invoke: 0, Automatic: 1 },
  ThemeColor: class { constructor(public id: string) {} },
  Range,
  CancellationTokenSource,
  InlineCompletionItem: class { command: any; constructor(public insertText: string, public range: any) {} },
  window: {
    createOutputChannel: () => ({ appendLine() {}, dispose() {} }),
    createStatusBarItem: () => (state.statusItem = { text: "", tooltip: "", show() {}, dispose() {} }),
    get activeTextEditor() { return state.activeTextEditor; },
    showErrorMessage: async (message: string) => { state.errors.push(message); },
    onDidChangeTextEditorSelection: (listener: (event: any) => void) => { state.selectionListeners.push(listener); return { dispose() {} }; },
  },
  workspace: {
    getConfiguration: () => ({
      get: (key: string, fallback?: unknown) => (key in state.config ? state.config[key] : fallback),
      update: async (key: string, value: unknown) => {
        state.config[key] = value;
        for (const listener of state.configListeners) listener({ affectsConfiguration: (s: string) => s === "dllm" || s === `dllm.${key}` });
      },
    }),
    onDidChangeConfiguration: (listener: (event: any) => void) => { state.configListeners.push(listener); return { dispose() {} }; },
  },
  languages: {
    registerInlineCompletionItemProvider: (_selector: unknown, provider: unknown) => { state.providers.push(provider); return { dispose() {} }; },
  },
  commands: {
    registerCommand: (name: string, fn: (...args: any[]) => any) => { state.commands.set(name, fn); return { dispose() {} }; },
    executeCommand: async (name: string, ...args: any[]) => {
      state.executed.push(name);
      return state.commands.get(name)?.(...args);
    },
  },
};

const fakes: Record<string, unknown> = {
  vscode,
  "vscode-languageclient/node": { LanguageClient: FakeLanguageClient, State: { Stopped: 1, Running: 2 }, TransportKind: { stdio: 0 } },
};
const originalLoad = (Module as any)._load;
(Module as any)._load = function (request: string, ...rest: unknown[]) {
  return request in fakes ? fakes[request] : originalLoad.call(this, request, ...rest);
};
