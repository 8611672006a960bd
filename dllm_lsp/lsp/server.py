"""The language server: pygls wiring and thin handlers over service.CompletionService.

Capabilities: inlineCompletionProvider (registered with InlineCompletionOptions, which is what
makes pygls advertise it), completionProvider (fallback: one item, a textEdit at the cursor),
incremental sync, position encoding negotiated by pygls (the client's first choice among
utf-8/utf-16/utf-32; utf-16 when it offers none). Custom messages (editors/README.md lists them):
dllm/inlineCompletionUpdate and dllm/status (server -> client), dllm/infill and dllm/metrics
(requests), dllm/didShowCompletion and dllm/didAcceptCompletion (notifications).

Settings come from initializationOptions and workspace/didChangeConfiguration (flat or under
"dllm"); a change notification without settings makes the server pull the "dllm" section with
workspace/configuration when the client supports it.

Errors: a request whose params do not match the method's type gets InvalidParams (pygls by
itself only logs those and never answers; DllmProtocol answers them); unknown methods get
MethodNotFound; a position past the end of its line or document, or a document that is not
open, gets InvalidParams. Handlers never let an exception take the server down. Only the
protocol goes to stdout; logs go to stderr or --log-file.

Bad input is logged once: the message loop is rpc_io's, and lsp/protocol.py's DllmProtocol
decodes, checks and answers each message (one log line for each the server does not act on).
Lone surrogates in document text (valid JSON, invalid UTF-8) become U+FFFD before the text
reaches the tokenizer.
"""
from __future__ import annotations

import asyncio
import logging
import os
import re
import sys
import threading
import uuid
from typing import Any, Dict, Optional

from lsprotocol import types
from pygls.lsp.server import LanguageServer

from dllm_lsp import __version__
from dllm_lsp.core.syntax import language_for_path
from dllm_lsp.lsp.protocol import DllmProtocol, invalid, plain
from dllm_lsp.lsp.positions import edit_end, normalize_encoding, offset_at
from dllm_lsp.lsp.messages import DocumentAt
from dllm_lsp.runtime.workspace import Workspace
from dllm_lsp.lsp.service import CompletionService
from dllm_lsp.settings import VALIDATORS

log = logging.getLogger(__name__)

INFILL = "dllm/infill"
METRICS = "dllm/metrics"
CURSOR = "dllm/cursor"          # client -> server: {uri, position, token?}, the cursor moved (warm-up hint)
DID_SHOW = "dllm/didShowCompletion"
DID_ACCEPT = "dllm/didAcceptCompletion"
class PygLsClient:
    """service.ClientPort on top of a pygls LanguageServer."""

    def __init__(self, ls: LanguageServer):
        self.ls = ls

    def notify(self, method: str, params: Any) -> None:
        self.ls.protocol.notify(method, params)

    def show_message(self, kind: str, message: str) -> None:
        level = {"error": types.MessageType.Error, "warning": types.MessageType.Warning}.get(kind, types.MessageType.Info)
        log.log(logging.ERROR if kind == "error" else logging.WARNING, "%s", message)
        self.ls.window_show_message(types.ShowMessageParams(type=level, message=message))

    async def progress_begin(self, title: str) -> Optional[str]:
        caps = self.ls.client_capabilities
        if not (caps and caps.window and caps.window.work_done_progress):
            return None
        token = f"dllm-load-{uuid.uuid4().hex[:8]}"
        try:
            await self.ls.work_done_progress.create_async(token)
        except Exception as exc:           # the client refused: no progress then
            log.debug("progress create failed: %r", exc)
            return None
        self.ls.work_done_progress.begin(token, types.WorkDoneProgressBegin(title=title, cancellable=False))
        return token

    def progress_end(self, token: Optional[str], message: str) -> None:
        if token is not None:
            self.ls.work_done_progress.end(token, types.WorkDoneProgressEnd(message=message))


class DllmServer(LanguageServer):
    def __init__(self, default_model: Optional[str] = None):
        super().__init__("dllm-lsp", __version__, protocol_cls=DllmProtocol,
                         text_document_sync_kind=types.TextDocumentSyncKind.Incremental)
        self.service = CompletionService(PygLsClient(self), default_model=default_model)
        self.last_text: Dict[str, str] = {}       # uri -> its text after the last didOpen / didChange

    def report_server_error(self, error, source):
        # every path of pygls that reports an error has logged its one line already
        log.debug("server error (%s): %s", getattr(source, "__name__", source), error)

    def start_io(self, stdin=None, stdout=None):
        """pygls's stdio server on rpc_io's message loop (one line per bad message, no tracebacks)."""
        from pygls.io_ import StdinAsyncReader, StdoutWriter

        import dllm_lsp.lsp.rpc_io as rpc_io
        self._stop_event = threading.Event()
        self.protocol.set_writer(StdoutWriter(stdout or sys.stdout.buffer))
        reader = StdinAsyncReader(stdin or sys.stdin.buffer, self.thread_pool)
        try:
            asyncio.run(rpc_io.run_async(self._stop_event, reader, self.protocol))
        except BrokenPipeError:
            log.error("the connection to the client is lost; shutting down")
        except (KeyboardInterrupt, SystemExit):
            pass
        finally:
            self.shutdown()
            self.leave_if_engine_busy()

    def leave_if_engine_busy(self) -> None:
        """A model load cannot be interrupted, and ending the interpreter while the engine thread is
        inside torch aborts the process (SIGABRT, "terminate called without an active exception"):
        an `exit` during a load did that. Everything is saved by then (shutdown), so leave at once."""
        thread = getattr(self.service.worker, "_thread", None)
        if thread is not None and thread.is_alive():
            self.service.worker.stop(timeout=1.0)
            if thread.is_alive():
                logging.shutdown()
                sys.stderr.flush()
                os._exit(0)

    def start_tcp(self, host: str, port: int) -> None:
        """pygls's TCP server (one client) on rpc_io's message loop."""
        import dllm_lsp.lsp.rpc_io as rpc_io
        self._stop_event = stop_event = threading.Event()

        async def connection(reader, writer):
            self.protocol.set_writer(writer)
            await rpc_io.run_async(stop_event, reader, self.protocol)
            self.shutdown()

        async def serve():
            self._server = await asyncio.start_server(connection, host, port)
            async with self._server:
                await self._server.serve_forever()

        try:
            asyncio.run(serve())
        except (KeyboardInterrupt, SystemExit, asyncio.CancelledError):
            pass
        finally:
            self.shutdown()
            self.leave_if_engine_busy()

    # ---- helpers used by the handlers -----------------------------------------------------
    def document_at_offset(self, uri: str, offset: Optional[int]) -> Optional[DocumentAt]:
        """The open document with the cursor at `offset` (code points; None: the end), or None."""
        doc = self.workspace.text_documents.get(uri)
        if doc is None:
            return None
        text = encodable(doc.source)
        offset = len(text) if offset is None else max(0, min(offset, len(text)))
        return DocumentAt(uri=uri, version=doc.version, text=text, offset=offset,
                          language_id=doc.language_id or language_for_path(uri), position={},
                          others=self.other_documents(uri))

    def other_documents(self, uri: str):
        """(uri, text) of the other open documents of the same language (snippets, drafts)."""
        docs = self.workspace.text_documents
        lang = docs[uri].language_id if uri in docs else None
        return [(u, encodable(d.source)) for u, d in docs.items() if u != uri and d.language_id == lang and d.source]

    def document_at(self, uri: str, position: types.Position) -> DocumentAt:
        docs = self.workspace.text_documents
        if uri not in docs:
            raise invalid(f"document {uri} is not open (send textDocument/didOpen first)")
        doc = docs[uri]
        encoding = normalize_encoding(self.workspace.position_encoding)
        try:
            offset = offset_at(doc.source, position.line, position.character, encoding)
        except ValueError as exc:
            raise invalid(str(exc)) from None
        return DocumentAt(uri=uri, version=doc.version, text=encodable(doc.source), offset=offset,
                          language_id=doc.language_id or language_for_path(uri),
                          position={"line": position.line, "character": position.character},
                          others=self.other_documents(uri))


_SURROGATE = re.compile("[\ud800-\udfff]")


def encodable(text: str) -> str:
    """`text` with lone surrogates (JSON allows "\\ud800"; UTF-8 cannot hold them) replaced by U+FFFD,
    one code point for one, so offsets stay valid; the tokenizer and tree-sitter need real UTF-8."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", text)


def supports_configuration_pull(ls: LanguageServer) -> bool:
    caps = ls.client_capabilities
    return bool(caps and caps.workspace and caps.workspace.configuration)


def build_server(default_model: Optional[str] = None) -> DllmServer:
    server = DllmServer(default_model)
    svc = server.service

    @server.feature(types.INITIALIZE)
    def initialize(ls: DllmServer, params: types.InitializeParams):
        if params.initialization_options is not None:
            svc.configure(params.initialization_options, initial=True)
        folders = [f.uri for f in params.workspace_folders or []] or [params.root_uri or params.root_path or ""]
        svc.repo.workspace = Workspace([f for f in folders if f])

    @server.feature(types.INITIALIZED)
    def initialized(ls: DllmServer, params: types.InitializedParams):
        svc.start()

    @server.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
    async def did_change_configuration(ls: DllmServer, params: types.DidChangeConfigurationParams):
        if isinstance(params.settings, dict) and params.settings:
            svc.configure(params.settings)
        elif supports_configuration_pull(ls):        # "settings changed, ask for them" (pull model)
            items = [types.ConfigurationItem(section="dllm")]
            result = await asyncio.wait_for(ls.workspace_configuration_async(
                types.ConfigurationParams(items=items)), timeout=5)
            if result and isinstance(result[0], dict):
                svc.configure(result[0])

    @server.feature(types.TEXT_DOCUMENT_DID_OPEN)
    def did_open(ls: DllmServer, params: types.DidOpenTextDocumentParams):
        # the cursor is not known yet: warm where typing into a fresh file happens, its end
        doc = ls.document_at_offset(params.text_document.uri, None)
        if doc is not None:
            ls.last_text[doc.uri] = doc.text
            svc.warm_soon(doc, delay_ms=0)

    @server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
    def did_change(ls: DllmServer, params: types.DidChangeTextDocumentParams):
        uri = params.text_document.uri
        change = params.content_changes[-1] if params.content_changes else None
        offset = None
        if isinstance(change, types.TextDocumentContentChangePartial):   # the cursor follows the edit
            doc = ls.workspace.text_documents.get(uri)
            encoding = normalize_encoding(ls.workspace.position_encoding)
            try:
                offset = offset_at(doc.source, change.range.start.line, change.range.start.character,
                                   encoding) + len(change.text)
            except (ValueError, AttributeError):
                offset = None
        doc = ls.workspace.text_documents.get(uri)
        if doc is None:
            return
        text = encodable(doc.source)
        if offset is None and uri in ls.last_text:   # a whole-document change: the cursor ends the edit
            offset = edit_end(ls.last_text[uri], text)
        ls.last_text[uri] = text
        doc = ls.document_at_offset(uri, offset)
        if doc is not None:
            svc.visited(doc)
            svc.warm_soon(doc)

    @server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(ls: DllmServer, params: types.DidCloseTextDocumentParams):
        ls.last_text.pop(params.text_document.uri, None)
        svc.closed(params.text_document.uri)          # its queued work would only hold the engine up

    @server.feature(CURSOR)
    def cursor(ls: DllmServer, params):
        p = plain(params)
        if not isinstance(p, dict) or not isinstance(p.get("uri"), str) or not isinstance(p.get("position"), dict):
            log.info("dllm/cursor ignored: params must be {uri: string, position: {line, character}}")
            return
        doc = ls.workspace.text_documents.get(p["uri"])
        if doc is None:
            return
        pos = p["position"]
        try:
            offset = offset_at(doc.source, int(pos.get("line", 0)), int(pos.get("character", 0)),
                               normalize_encoding(ls.workspace.position_encoding))
        except (ValueError, TypeError):
            return
        token = p.get("token") if isinstance(p.get("token"), (str, int)) else None
        doc = ls.document_at_offset(p["uri"], offset)
        svc.visited(doc)
        svc.warm_soon(doc, token=token)

    @server.feature(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions())
    async def inline_completion(ls: DllmServer, params: types.InlineCompletionParams):
        doc = ls.document_at(params.text_document.uri, params.position)
        invoked = params.context is not None and params.context.trigger_kind == types.InlineCompletionTriggerKind.Invoked
        answer = await svc.complete(doc, stream=True, alternatives=invoked)
        if not answer.text:
            return types.InlineCompletionList(items=[])
        edit_range = types.Range(start=params.position, end=params.position)
        return types.InlineCompletionList(items=[types.InlineCompletionItem(insert_text=text, range=edit_range)
                                                 for text in (answer.text, *answer.alternatives)])

    @server.feature(types.TEXT_DOCUMENT_COMPLETION, types.CompletionOptions(trigger_characters=[".", "(", " "]))
    async def completion(ls: DllmServer, params: types.CompletionParams):
        doc = ls.document_at(params.text_document.uri, params.position)
        answer = await svc.complete(doc, stream=False)
        if not answer.text:
            return types.CompletionList(is_incomplete=True, items=[])
        first = answer.text.strip().split("\n")[0]
        label = first if len(first) <= 60 else first[:57] + "..."
        edit = types.TextEdit(range=types.Range(start=params.position, end=params.position), new_text=answer.text)
        item = types.CompletionItem(label=label or "dllm", kind=types.CompletionItemKind.Text, text_edit=edit,
                                    detail="dllm-lsp", insert_text_format=types.InsertTextFormat.PlainText,
                                    filter_text=doc.text[doc.text.rfind("\n", 0, doc.offset) + 1: doc.offset] + answer.text,
                                    sort_text="0")
        return types.CompletionList(is_incomplete=True, items=[item])

    @server.feature(INFILL)
    async def infill(ls: DllmServer, params):
        p = plain(params)
        if not isinstance(p, dict) or not isinstance(p.get("prefix"), str):
            raise invalid("dllm/infill needs params {prefix: string, suffix?: string, options?: object}")
        suffix, options = p.get("suffix", ""), p.get("options") or {}
        if not isinstance(suffix, str) or not isinstance(options, dict):
            raise invalid("dllm/infill: suffix must be a string and options an object")
        try:
            request_options = infill_options(options, svc.settings)
        except ValueError as exc:
            raise invalid(f"dllm/infill: {exc}") from None
        return await svc.infill(encodable(p["prefix"]), encodable(suffix), request_options)

    @server.feature(METRICS)
    def metrics(ls: DllmServer, params):
        return {**svc.metrics.as_json(), **svc.worker.stats(), "state": svc.host.state, "model": svc.settings.model,
                "contextTokens": svc.engine_context_tokens(),
                "positionEncoding": normalize_encoding(ls.workspace.position_encoding)}

    @server.feature(DID_SHOW)
    def did_show(ls: DllmServer, params):
        p = plain(params)
        if isinstance(p, dict) and isinstance(p.get("text"), str):
            svc.shown(p["text"])

    @server.feature(DID_ACCEPT)
    def did_accept(ls: DllmServer, params):
        p = plain(params)
        if isinstance(p, dict) and isinstance(p.get("acceptedLength"), int):
            svc.accepted(p["acceptedLength"])

    @server.feature(types.SHUTDOWN)
    def shutdown(ls: DllmServer, params):
        svc.close()

    return server


def infill_options(options: Dict[str, Any], settings) -> Dict[str, Any]:
    """dllm/infill options (camelCase) -> InfillRequest keyword arguments; ValueError on a bad value."""
    checks = {"maxNewTokens": ("max_new_tokens", VALIDATORS["max_new_tokens_block"]),
              "policy": ("policy", VALIDATORS["policy"]), "threshold": ("threshold", VALIDATORS["threshold"]),
              "entropyBound": ("entropy_bound", VALIDATORS["entropy_bound"]),
              "tokensPerStep": ("tokens_per_step", VALIDATORS["tokens_per_step"]),
              "blockSize": ("block_size", VALIDATORS["block_size"]),
              "deadlineMs": ("deadline_ms", lambda v: None if v is None else _positive(v)),
              "drafting": ("drafting", VALIDATORS["drafting"]),
              "maxDraftTokens": ("max_draft_tokens", VALIDATORS["max_draft_tokens"]),
              "draftTree": ("draft_tree", VALIDATORS["draft_tree"]),
              "endsAtNewline": ("ends_at_newline", VALIDATORS["drafting"])}
    out = {"max_new_tokens": settings.max_new_tokens_block, "policy": settings.policy,
           "threshold": settings.threshold, "entropy_bound": settings.entropy_bound,
           "tokens_per_step": settings.tokens_per_step, "block_size": settings.block_size,
           "drafting": settings.drafting, "max_draft_tokens": settings.max_draft_tokens,
           "draft_tree": settings.draft_tree}
    for key, value in options.items():
        if key not in checks:
            raise ValueError(f"unknown option '{key}' (known: {', '.join(checks)})")
        name, check = checks[key]
        try:
            out[name] = check(value)
        except ValueError as exc:
            raise ValueError(f"option '{key}' {exc}") from None
    return out


def _positive(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ValueError("must be a positive number")
    return float(value)
