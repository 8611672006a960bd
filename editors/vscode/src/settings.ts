/**
 * Settings mapping: VS Code's `dllm.*` configuration -> what the server and the client need.
 *
 * Pure (no `vscode` import) so it is unit-tested under plain Node. The server reads camelCase
 * settings (initializationOptions, and section `dllm` of workspace/didChangeConfiguration);
 * the client keeps the few that only it uses (enable, server command). Values of the wrong type
 * are dropped with a message, so a typo in settings.json falls back to the server's default
 * instead of reaching it.
 */

/** The settings the server understands, with the JSON type each must have. */
const SERVER_KEYS: Record<string, "string" | "number" | "integer" | "boolean" | "object"> = {
  model: "string",
  device: "string",
  dtype: "string",
  threads: "integer",
  policy: "string",
  threshold: "number",
  entropyBound: "number",
  tokensPerStep: "integer",
  blockSize: "integer",
  maxNewTokensLine: "integer",
  maxNewTokensBlock: "integer",
  blankLineMinTokens: "integer",
  prefixTokens: "integer",
  suffixTokens: "integer",
  snippetTokens: "integer",
  repoTokens: "integer",
  debounceMs: "integer",
  enabledLanguages: "object",
  streaming: "boolean",
  drafting: "boolean",
  maxDraftTokens: "integer",
  draftTree: "boolean",
  drafter: "string",
  warmUp: "boolean",
  warmUpDelayMs: "integer",
  prepareNext: "boolean",
  suffixReuse: "boolean",
  logLevel: "string",
  backend: "object",
};

export type ServerSettings = Record<string, unknown>;

export interface MappedSettings {
  settings: ServerSettings;
  problems: string[];
}

function hasType(value: unknown, kind: string): boolean {
  switch (kind) {
    case "integer":
      return typeof value === "number" && Number.isInteger(value);
    case "object":
      return typeof value === "object" && value !== null && !Array.isArray(value);
    default:
      return typeof value === kind;
  }
}

/**
 * `raw` is the `dllm` configuration section as a plain object (VS Code's
 * `workspace.getConfiguration("dllm")` flattened by `readSection`). Unknown keys and client-only
 * keys (enable, server.*, trace.*) are not sent; null means "server default" and is left out.
 */
export function toServerSettings(raw: Record<string, unknown>): MappedSettings {
  const settings: ServerSettings = {};
  const problems: string[] = [];
  for (const [key, kind] of Object.entries(SERVER_KEYS)) {
    const value = raw[key];
    if (value === undefined || value === null) continue;
    if (!hasType(value, kind)) {
      problems.push(`dllm.${key}: expected ${kind}, got ${JSON.stringify(value)}; using the server's default`);
      continue;
    }
    if (key === "enabledLanguages") {
      const langs: Record<string, boolean> = {};
      for (const [lang, on] of Object.entries(value as Record<string, unknown>)) {
        if (typeof on === "boolean") langs[lang] = on;
        else problems.push(`dllm.enabledLanguages.${lang}: expected boolean, got ${JSON.stringify(on)}`);
      }
      settings[key] = langs;
    } else {
      settings[key] = value;
    }
  }
  return { settings, problems };
}

/** Is completion on for this language id? `*` is the default for ids not listed (on if absent). */
export function isLanguageEnabled(enabledLanguages: unknown, languageId: string): boolean {
  if (!hasType(enabledLanguages, "object")) return true;
  const table = enabledLanguages as Record<string, unknown>;
  if (typeof table[languageId] === "boolean") return table[languageId] as boolean;
  if (typeof table["*"] === "boolean") return table["*"] as boolean;
  return true;
}

export interface ServerCommand {
  command: string;
  args: string[];
}

/**
 * How to start the server: `dllm.server.command` if set (program + arguments), else
 * `<pythonPath> -m dllm_lsp.cli --stdio` if a Python is set, else `dllm-lsp --stdio` from PATH.
 */
export function serverCommand(raw: Record<string, unknown>): ServerCommand {
  const command = raw["server.command"];
  if (Array.isArray(command) && command.length > 0 && command.every((part) => typeof part === "string" && part)) {
    return { command: command[0] as string, args: (command as string[]).slice(1) };
  }
  if (typeof command === "string" && command.trim()) {
    return { command: command.trim(), args: ["--stdio"] };
  }
  const python = raw["server.pythonPath"];
  if (typeof python === "string" && python.trim()) {
    return { command: python.trim(), args: ["-m", "dllm_lsp.cli", "--stdio"] };
  }
  return { command: "dllm-lsp", args: ["--stdio"] };
}

/** Did a configuration change touch how the server is started (then it must restart)? The server
 * reloads the model itself when model / device / dtype change. */
export function needsRestart(changedKeys: string[]): boolean {
  return changedKeys.some((key) => key.startsWith("server."));
}

/** Every key of the `dllm` section that the extension reads, for flattening VS Code's config. */
export const SECTION_KEYS = ["enable", "server.command", "server.pythonPath", ...Object.keys(SERVER_KEYS)];
