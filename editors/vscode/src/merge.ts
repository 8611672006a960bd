/**
 * Merging streamed updates into the suggestion that is shown.
 *
 * Pure (no `vscode` import). A suggestion belongs to one request: (uri, document version, cursor
 * position). While the model refines it the server sends `dllm/inlineCompletionUpdate`
 * notifications whose `stable` text only grows; the request's response carries the final,
 * post-processed items. The shown text is the final text once it is there, else the longest
 * `stable` seen. An update changes the shown text only if it is for the same request and strictly
 * extends what is shown, so a late or reordered notification never makes the suggestion flicker
 * or shrink; only the final answer may differ from the streamed text (post-processing trims it).
 */

export interface Position {
  line: number;
  character: number;
}

export interface Range {
  start: Position;
  end: Position;
}

/** Identifies one request: an update for another key belongs to an older request. */
export interface RequestKey {
  uri: string;
  version: number;
  position: Position;
}

/** `dllm/inlineCompletionUpdate` params. */
export interface StreamUpdate extends RequestKey {
  stable: string;
  draft: string;
  done: boolean;
}

/** One item of a `textDocument/inlineCompletion` response, reduced to what is shown. */
export interface FinalItem {
  text: string;
  range?: Range;
}

export interface StreamState {
  stable: string;          // longest committed text seen so far
  draft: string;           // latest full guess (not shown by default)
  streamDone: boolean;     // the server said done=true
  final?: FinalItem[];     // set once the response arrived
}

export const EMPTY_STATE: StreamState = { stable: "", draft: "", streamDone: false };

export function sameKey(a: RequestKey, b: RequestKey): boolean {
  return a.uri === b.uri && a.version === b.version &&
    a.position.line === b.position.line && a.position.character === b.position.character;
}

/** The text to show for a state ("" = nothing to show yet). */
export function shownText(state: StreamState): string {
  if (state.final) return state.final.length > 0 ? state.final[0].text : "";
  return state.stable;
}

/** Fold one update into the state; returns the same object when nothing shown changes. */
export function applyUpdate(state: StreamState, key: RequestKey, update: StreamUpdate): StreamState {
  if (!sameKey(key, update) || state.final) return state;
  const grows = update.stable.length > state.stable.length && update.stable.startsWith(state.stable);
  if (!grows) {
    if (update.done && !state.streamDone) return { ...state, draft: update.draft, streamDone: true };
    return state;
  }
  return { stable: update.stable, draft: update.draft, streamDone: state.streamDone || update.done };
}

/** The response arrived: its items replace the streamed text. */
export function applyFinal(state: StreamState, items: FinalItem[]): StreamState {
  return { ...state, streamDone: true, final: items };
}

/** Did the shown text change between two states (then the editor must redraw)? */
export function shownChanged(before: StreamState, after: StreamState): boolean {
  return shownText(before) !== shownText(after);
}

/**
 * Normalise a `textDocument/inlineCompletion` result (`InlineCompletionItem[]`,
 * `InlineCompletionList`, or null) into plain items, dropping empty ones.
 */
export function itemsFromResult(result: unknown): FinalItem[] {
  if (!result) return [];
  const list = Array.isArray(result) ? result : (result as { items?: unknown }).items;
  if (!Array.isArray(list)) return [];
  const items: FinalItem[] = [];
  for (const raw of list) {
    if (!raw || typeof raw !== "object") continue;
    const insert = (raw as { insertText?: unknown }).insertText;
    const text = typeof insert === "string" ? insert
      : insert && typeof insert === "object" && typeof (insert as { value?: unknown }).value === "string"
        ? (insert as { value: string }).value : "";
    if (!text) continue;
    const range = (raw as { range?: Range }).range;
    items.push(range ? { text, range } : { text });
  }
  return items;
}
