/**
 * The status bar item's text, from the last `dllm/status` notification and the on/off switch.
 *
 * Pure (no `vscode` import): `$(name)` are VS Code codicons, rendered by the status bar.
 */

export interface ServerStatus {
  state: "starting" | "loading" | "ready" | "error" | "stopped";
  message?: string;
  model?: string;
  lastLatencyMs?: number | null;
}

export interface StatusView {
  text: string;
  tooltip: string;
  error: boolean;
}

/** Validate a `dllm/status` payload; unknown shapes read as an error with the raw text. */
export function parseStatus(params: unknown): ServerStatus {
  const raw = (params ?? {}) as Record<string, unknown>;
  const states = ["loading", "ready", "error"];
  const state = typeof raw.state === "string" && states.includes(raw.state) ? raw.state as ServerStatus["state"] : "error";
  const latency = typeof raw.lastLatencyMs === "number" && Number.isFinite(raw.lastLatencyMs) ? raw.lastLatencyMs : null;
  return {
    state,
    message: typeof raw.message === "string" ? raw.message : state === "error" ? `unexpected status ${JSON.stringify(params)}` : "",
    model: typeof raw.model === "string" ? raw.model : undefined,
    lastLatencyMs: latency,
  };
}

export function statusView(status: ServerStatus, enabled: boolean): StatusView {
  const model = status.model ? `model: ${status.model}` : "";
  const lines = (...parts: Array<string | undefined>) => parts.filter((part) => part).join("\n");
  if (!enabled) {
    return { text: "$(circle-slash) dLLM", tooltip: lines("dLLM completions are off (click to turn on)", model), error: false };
  }
  switch (status.state) {
    case "starting":
      return { text: "$(sync~spin) dLLM", tooltip: "starting the dllm-lsp server", error: false };
    case "loading":
      return { text: "$(sync~spin) dLLM loading", tooltip: lines(status.message || "loading the model", model), error: false };
    case "ready": {
      const latency = typeof status.lastLatencyMs === "number" ? ` ${Math.round(status.lastLatencyMs)} ms` : "";
      return {
        text: `$(check) dLLM${latency}`,
        tooltip: lines("dLLM ready (click to turn off)", model, latency ? `last suggestion:${latency}` : "", status.message),
        error: false,
      };
    }
    case "stopped":
      return { text: "$(debug-stop) dLLM", tooltip: lines("the dllm-lsp server is not running", status.message), error: true };
    default:
      return { text: "$(error) dLLM", tooltip: lines("dLLM error", status.message, model), error: true };
  }
}
