"""JSON-RPC messages in, for the language server: each body decoded (UTF-8, JSON; a body nested
too deeply pruned to find its id), structured without pygls's traceback logging, dispatched; a
message the server does not act on (not UTF-8, not JSON, not JSON-RPC 2.0, params that do not fit,
an unknown method, a failing handler, a cancel of an unknown id) costs exactly one log line,
tagged with the message's ordinal (lsp/logs.py), and a request with a usable id always gets an
answer (pygls by itself only logs a request whose params do not fit and never answers it).
"""
from __future__ import annotations

import functools
import json
import logging
from typing import Any, Optional

from pygls.exceptions import (JsonRpcException, JsonRpcInternalError, JsonRpcInvalidParams, JsonRpcInvalidRequest,
                               JsonRpcRequestCancelled)
from pygls.protocol import JsonRPCNotification, JsonRPCRequestMessage, JsonRPCResponseMessage, LanguageServerProtocol
from pygls.protocol.json_rpc import ResponseErrorMessage

from dllm_lsp.lsp.logs import MESSAGE_NO
from dllm_lsp.lsp.rpc_io import MAX_BODY, prune_deep

log = logging.getLogger("dllm_lsp.lsp.server")

_ANSWERED = object()        # a message already answered (or logged) while being parsed
MAX_METHOD = 200            # no LSP method name is longer


def structure_error(exc: Exception) -> str:
    """What is wrong with a message, in a few words: cattrs' own account ('expected int @ $.params.position.line')."""
    try:
        from cattrs import transform_error
        parts = transform_error(exc, path="$")
    except Exception:
        parts = []
    text = "; ".join(parts[:3]) + (f"; and {len(parts) - 3} more" if len(parts) > 3 else "")
    return text or f"{type(exc).__name__}: {exc}"


class DllmProtocol(LanguageServerProtocol):
    """pygls's protocol with bad input answered and logged once (see the module docstring).

    `receive(number, body, size)` (called by rpc_io's loop for every framed message) decodes
    the body and dispatches it; whatever is wrong with a message (not UTF-8, not JSON, not a
    JSON-RPC object, params that do not fit the method, an unknown method, a failing handler)
    ends in exactly one log line for it, and a request with a usable id always gets an answer."""

    def receive(self, number: int, body: Optional[bytes], size: int) -> None:
        token = MESSAGE_NO.set(number)
        try:
            if body is None:
                log.warning("rejected message: body of %d bytes is over the %d-byte limit", size, MAX_BODY)
                return
            try:
                text = body.decode("utf-8")
                data = json.loads(text)
            except UnicodeDecodeError as exc:
                log.warning("rejected message: body is not UTF-8 (%s at byte %d)", exc.reason, exc.start)
                return
            except RecursionError:                   # answer it under its id, if it has one
                try:
                    data = json.loads(prune_deep(text, 64))
                except (ValueError, RecursionError):
                    data = None
                self._reject(data, f"JSON nested deeper than Python's parser allows ({len(body)} bytes)",
                             JsonRpcInvalidParams("params nested too deeply"))
                return
            except ValueError as exc:
                log.warning("rejected message: body is not JSON (%s)", exc)
                return
            message = self.structure_message(data)
            if message is not _ANSWERED:
                self.handle_message(message)
        except Exception as exc:              # a bug of ours or of pygls: one line, the server goes on
            log.error("message could not be handled: %s: %s", type(exc).__name__, exc, exc_info=exc)
        finally:
            MESSAGE_NO.reset(token)

    def _reject(self, data: Any, why: str, error=None) -> object:
        """Log one line for a message we do not act on; answer it when it is a request with an id."""
        msg_id = data.get("id") if isinstance(data, dict) else None
        method = data.get("method") if isinstance(data, dict) else None
        what = f"request {msg_id!r} ({method!r})" if msg_id is not None and method is not None else \
            f"notification {method!r}" if method is not None else "message"
        log.warning("rejected %s: %s", what, why)
        if error is not None and method is not None and isinstance(msg_id, (str, int)) and not isinstance(msg_id, bool):
            self._send_response(msg_id, None, error.to_response_error())
        return _ANSWERED

    def structure_message(self, data):
        """pygls's structure_message without its traceback logging; bad messages are rejected."""
        if not isinstance(data, dict):
            return self._reject(data, f"not a JSON-RPC message (a JSON {type(data).__name__}, not an object)")
        if data.get("jsonrpc") != self.VERSION:
            return self._reject(data, f"not a JSON-RPC 2.0 message (jsonrpc: {data.get('jsonrpc')!r})",
                                JsonRpcInvalidRequest("not a JSON-RPC 2.0 message"))
        method = data.get("method")
        if "method" in data and not isinstance(method, str):
            return self._reject(data, f"method is a {type(method).__name__}, not a string",
                                JsonRpcInvalidRequest("method must be a string"))
        # get_message_type is an lru_cache keyed by the method name: a 1 MB name would stay in memory
        known = self.get_message_type(method) if isinstance(method, str) and len(method) <= MAX_METHOD else None
        try:
            if "id" in data:
                if "error" in data:
                    return self._converter.structure(data, ResponseErrorMessage)
                if "method" in data:
                    return self._converter.structure(data, known or JsonRPCRequestMessage)
                response_type = self._result_types.pop(data["id"], None) or JsonRPCResponseMessage
                return self._converter.structure(data, response_type)
            return self._converter.structure(data, known or JsonRPCNotification)
        except Exception as exc:
            cause, what = structure_error(exc), method or "a response"
            return self._reject(data, f"invalid params for {what}: {cause}",
                                JsonRpcInvalidParams(f"invalid params for {what}: {cause}"))

    def handle_message(self, message):
        if message is _ANSWERED:
            return
        super().handle_message(message)

    # pygls logs a traceback for a failing handler and then reports it again: one line instead
    def _send_handler_result(self, future, *, msg_id):
        self._request_futures.pop(msg_id, None)
        if future.cancelled():
            self._send_response(msg_id, error=JsonRpcRequestCancelled(
                f'Request with id "{msg_id}" is canceled').to_response_error())
            return
        exc = future.exception()
        if exc is None:
            self._send_response(msg_id, result=future.result())
            return
        if isinstance(exc, JsonRpcException):
            log.warning("rejected request %r: %s", msg_id, exc, exc_info=exc)
            error = exc
        else:
            log.error("request %r failed: %s: %s", msg_id, type(exc).__name__, exc, exc_info=exc)
            error = JsonRpcInternalError(message=f"{type(exc).__name__}: {exc}")
        self._send_response(msg_id, error=error.to_response_error())

    def _check_handler_result(self, future):
        if future.cancelled() or (exc := future.exception()) is None:
            return
        level = logging.WARNING if isinstance(exc, (JsonRpcException, LookupError, ValueError, TypeError)) \
            else logging.ERROR
        log.log(level, "rejected notification: %s: %s", type(exc).__name__, exc, exc_info=exc)

    def _execute_handler(self, msg_id, handler, args=None, kwargs=None, callback=None):
        """pygls keeps the future of every notification handler and of every step of its built-in
        generator handlers (didOpen, didChange, ...) in _request_futures under a fresh uuid and never
        removes it: a typing storm grew the server by ~1.5 KB per keystroke. Requests from the
        client keep theirs (a cancel finds it; _send_handler_result removes it)."""
        super()._execute_handler(msg_id, handler, args=args, kwargs=kwargs, callback=callback)
        if isinstance(callback, functools.partial) and callback.func == self._send_handler_result:
            return
        future = self._request_futures.get(msg_id)
        if future is not None:
            future.add_done_callback(lambda _f, key=msg_id: self._request_futures.pop(key, None))

    def _handle_cancel_notification(self, msg_id):
        if self._request_futures.get(msg_id) is None:
            log.warning("ignored $/cancelRequest for unknown request id %r", msg_id)
            return
        super()._handle_cancel_notification(msg_id)


def invalid(message: str) -> JsonRpcInvalidParams:
    return JsonRpcInvalidParams(message)


def plain(obj: Any) -> Any:
    """pygls hands custom params over as namedtuples; turn them back into dicts and lists."""
    if hasattr(obj, "_asdict"):
        return {k: plain(v) for k, v in obj._asdict().items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    return obj
