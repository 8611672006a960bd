/**
 * Inline-completion sessions: one in-flight request at a time, its streamed state, and when the
 * editor must ask the provider again.
 *
 * Pure (no `vscode` import; the request sender and the re-trigger are injected), so the whole
 * streaming behaviour is unit-tested under Node. The flow:
 *   provider(key) -> `begin(key)` starts (or reuses) the session for that key, cancelling an older
 *   one; the provider shows `shownText` at once if there is some, else waits for `nextChange`.
 *   `dllm/inlineCompletionUpdate` -> `onUpdate` merges it; if the shown text grew, `retrigger(key)`
 *   makes the editor call the provider again, which now returns the longer text.
 *   The response -> the final items; one more re-trigger if they differ from what was shown.
 */
import {
  applyFinal, applyUpdate, EMPTY_STATE, FinalItem, itemsFromResult, RequestKey, sameKey, shownChanged,
  shownText, StreamState, StreamUpdate,
} from "./merge";

/** Sends the request (`explicit`: the user asked, e.g. Alt-] cycling, and the server adds
 * alternatives); `signal.cancelled` turns true (and `onCancel` fires) when it is abandoned. */
export type SendRequest = (key: RequestKey, signal: CancelSignal, explicit: boolean) => Promise<unknown>;

export class CancelSignal {
  cancelled = false;
  private listeners: Array<() => void> = [];
  onCancel(listener: () => void): void {
    if (this.cancelled) listener();
    else this.listeners.push(listener);
  }
  cancel(): void {
    if (this.cancelled) return;
    this.cancelled = true;
    for (const listener of this.listeners.splice(0)) listener();
  }
}

export class Session {
  state: StreamState = EMPTY_STATE;
  readonly signal = new CancelSignal();
  /** The last non-empty text handed to the editor ("" = nothing shown yet). */
  provided = "";
  reported = false;
  private waiters: Array<() => void> = [];

  constructor(readonly key: RequestKey, readonly explicit = false, readonly again = false) {}

  get done(): boolean {
    return this.state.final !== undefined;
  }

  get text(): string {
    return shownText(this.state);
  }

  get items(): FinalItem[] {
    if (this.state.final) return this.state.final;
    return this.state.stable ? [{ text: this.state.stable }] : [];
  }

  /** Resolves at the next change of the shown text, at the end, or on cancel. */
  nextChange(): Promise<void> {
    if (this.done || this.signal.cancelled) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  /** Replace the state; wake waiters if the shown text changed or the session ended. */
  set(next: StreamState): boolean {
    const changed = shownChanged(this.state, next);
    const ended = next.final !== undefined && this.state.final === undefined;
    this.state = next;
    if (changed || ended) this.wake();
    return changed;
  }

  wake(): void {
    for (const waiter of this.waiters.splice(0)) waiter();
  }
}

export class SessionManager {
  current?: Session;

  constructor(
    private readonly send: SendRequest,
    private readonly retrigger: (key: RequestKey) => void,
    private readonly onShown: (key: RequestKey, text: string) => void = () => undefined,
    private readonly log: (message: string) => void = () => undefined,
  ) {}

  /** The provider handed `text` of `session` to the editor. */
  provided(session: Session, text: string): void {
    if (text) session.provided = text;
  }

  /** The current suggestion was accepted: it is reported shown (once) before the caller sends didAccept. */
  accepted(): void {
    this.cancel();
  }


  /** The session for `key`: the current one if it matches, else a new request (the old one is
   * cancelled). The user asking explicitly (Alt-], Alt+\\) where an answer already came asks again,
   * once: the server, asked twice at the same place, adds its alternatives (cycling). */
  begin(key: RequestKey, explicit = false): Session {
    const current = this.current;
    const same = current !== undefined && sameKey(current.key, key) && !current.signal.cancelled;
    if (current && same && (!explicit || !current.done || current.again)) return current;
    this.cancel();
    const session = new Session(key, explicit, explicit && same);
    this.current = session;
    this.send(key, session.signal, explicit).then(
      (result) => this.finish(session, itemsFromResult(result)),
      (error) => {
        if (!session.signal.cancelled) this.log(`inline completion failed: ${error?.message ?? error}`);
        this.finish(session, []);
      },
    );
    return session;
  }

  /** Abandon the current session; a suggestion it showed is reported as shown once. */
  cancel(): void {
    if (!this.current) return;
    this.report(this.current);
    this.current.signal.cancel();
    this.current.wake();
    this.current = undefined;
  }

  /** A `dllm/inlineCompletionUpdate` notification arrived. */
  onUpdate(update: StreamUpdate): void {
    const session = this.current;
    if (!session || !sameKey(session.key, update)) return;
    if (session.set(applyUpdate(session.state, session.key, update))) this.retrigger(session.key);
  }

  private report(session: Session): void {
    if (session.reported || !session.provided) return;
    session.reported = true;
    this.onShown(session.key, session.provided);
  }

  private finish(session: Session, items: FinalItem[]): void {
    if (session.done) return;
    const changed = session.set(applyFinal(session.state, items));
    if (changed && this.current === session) this.retrigger(session.key);
  }
}
