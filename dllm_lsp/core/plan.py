"""The pure completion core: (document, cursor, settings) -> what to ask the engine; its output -> text.

    plan = plan_completion(text, offset, language_id, settings, tokenizer)   # None: no completion here
    for upd in engine.stream(plan.request): show(stream_completion(plan, upd.stable))
    insert(finish_completion(plan, result.text))                              # "" = no item

No LSP types, no threads, no engine calls: the server, `dllm-lsp complete`, the benchmark
and the evaluation all run this same pipeline. `plan_completion` decides the mode with
syntax.decide_mode (line: the rest of the current line; block: one or more lines), which sets
the length of the masked span (settings.max_new_tokens_line / _block); on a blank line the
request asks for at least settings.blank_line_min_tokens tokens (min_new_tokens; default 0, 1
makes a strong model always offer a line there), builds the context
windows (context.windows, prefix favoured) and adds other files: given a `RepoView` (the
document lies in a workspace), the repository context (core/repo.py: definitions behind the
imports, recently edited chunks) within settings.repo_tokens, in the model's repo layout
(`request.repo`) or, for a model without one, as a comment header; where that finds no file,
snippets from other open documents as a comment header within settings.snippet_tokens.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional, Sequence, Tuple

from engine.api import InfillRequest, RepoContext

import dllm_lsp.core.context as context
import dllm_lsp.core.postprocess as postprocess
import dllm_lsp.core.repo as repo_context
import dllm_lsp.core.syntax as syntax
from dllm_lsp.settings import Settings


@dataclass(frozen=True)
class RepoView:
    """The document's place in its workspace, for the repository context."""
    name: str                        # the repository's name (its root folder's)
    path: str                        # the document's path under the root (posix)
    read: repo_context.Read          # root-relative path -> text or None (runtime/workspace.py)
    recent: Sequence[repo_context.RepoFile] = ()   # chunks of recently edited or viewed other files
    layout: bool = True              # the model reads the repo layout; False: a comment header
    generation: object = None        # unchanged while the other files are (None: read them every time)


@dataclass(frozen=True)
class Plan:
    prefix: str                  # text before the cursor sent to the engine (window + snippet header)
    suffix: str                  # text after the cursor sent to the engine
    mode: str                    # "line" | "block"
    request: InfillRequest       # ready for Engine.stream / Engine.infill
    language_id: str = ""
    shape: postprocess.Shape = postprocess.Shape()   # what post-processing needs
    snippet_header: str = ""     # the part of `prefix` that came from other documents


MAX_DRAFT_SOURCE_CHARS = 20_000     # per other open document searched for drafts
OPEN_LOOKBACK_CHARS = 4_000         # brackets left open above the cursor's line are looked for this far back


def _request(prefix: str, suffix: str, mode: str, settings: Settings, min_new_tokens: int = 0,
             draft_sources: Sequence[str] = ()) -> InfillRequest:
    return settings.infill_request(prefix, suffix, max_new_tokens=settings.max_new_tokens(mode),
                                   min_new_tokens=min_new_tokens, draft_sources=tuple(draft_sources),
                                   ends_at_newline=mode == "line")


def shape_at(text: str, offset: int, mode: str, language_id: str, lookahead: int = 8) -> postprocess.Shape:
    """The cursor's line split at the cursor, the next non-blank lines, and the scope's indentation."""
    line_start = text.rfind("\n", 0, offset) + 1
    line_end = text.find("\n", offset)
    line_end = len(text) if line_end < 0 else line_end
    after_line = text[line_end + 1:] if line_end < len(text) else ""
    next_lines = []
    for line in after_line.split("\n"):
        if line.strip():
            next_lines.append(line)
            if len(next_lines) == lookahead:
                break
    spec = syntax.spec_for(language_id)
    scope_indent = None
    if mode == "block":
        _, at = syntax.last_code_char(text, offset, spec)
        opener_line_start = text.rfind("\n", 0, max(at, 0)) + 1
        scope_indent = postprocess.indent_width(text[opener_line_start:at + 1]) if at >= 0 else None
    above = text[max(0, text.rfind("\n", 0, max(0, line_start - OPEN_LOOKBACK_CHARS)) + 1):line_start]
    return postprocess.Shape(mode=mode, line_prefix=text[line_start:offset],
                             line_suffix=text[offset:line_end].rstrip("\r"), next_lines=tuple(next_lines),
                             scope_indent=scope_indent, braces=not spec.indent_scoped,
                             open_before=syntax.brackets_left_open(above.split("\n"), spec))


def plan_completion(text: str, offset: int, language_id: str, settings: Settings, tokenizer=None,
                    snippets: Sequence[Tuple[str, str]] = (), draft_hints: Sequence[str] = (),
                    repo: Optional[RepoView] = None) -> Optional[Plan]:
    """What to ask the engine for a completion at `offset` (code points) in `text`; None = none here.

    snippets: (name, text) of other open documents, mined for drafts, and for a context header
    when the repository context has no file.
    repo: the workspace around the document (see the module docstring).
    draft_hints: texts likely to hold the next tokens (the document's previous suggestion),
    searched for drafts before the other documents.
    """
    if not 0 <= offset <= len(text):
        raise ValueError(f"offset {offset} outside the document (length {len(text)})")
    if not settings.language_enabled(language_id):
        return None
    mode = syntax.decide_mode(text, offset, language_id)
    if mode is None:
        return None
    count = context.token_counter(tokenizer)
    header, files = "", []
    if repo is not None and settings.repo_tokens > 0:
        files = repo_context.repo_files(repo.path, text, text.count("\n", 0, offset), language_id, repo.read,
                                        settings.repo_tokens, count, repo.recent, repo.generation)
        if files and not repo.layout:
            header = "".join(context.comment_block(f.path, f.text, syntax.spec_for(language_id).comment)
                             for f in files)
    if not files and snippets and settings.snippet_tokens > 0:
        line_start = text.rfind("\n", 0, offset) + 1      # lines above the cursor: stable while typing on a line
        near = text[max(0, line_start - 800): line_start]
        header = context.pick_snippets(snippets, near, settings.snippet_tokens, count,
                                       syntax.spec_for(language_id).comment)
    prefix_budget = max(16, settings.prefix_tokens - (count(header) if header else 0))
    prefix, suffix = context.windows(text, offset, prefix_budget, settings.suffix_tokens, count)
    prefix = header + prefix
    shape = shape_at(text, offset, mode, language_id)
    # on a blank line the user may want a line: blank_line_min_tokens > 0 forbids answering nothing
    blank_line = not shape.line_prefix.strip() and not shape.line_suffix.strip()
    min_tokens = min(settings.blank_line_min_tokens, settings.max_new_tokens(mode)) if blank_line else 0
    sources = ([h for h in draft_hints if h] + [t[-MAX_DRAFT_SOURCE_CHARS:] for _, t in snippets][:2]
               if settings.drafting else [])
    request = _request(prefix, suffix, mode, settings, min_new_tokens=min_tokens, draft_sources=sources)
    if files and repo.layout:
        request = replace(request, repo=RepoContext(repo.name, repo.path, tuple((f.path, f.text) for f in files)))
    return Plan(prefix=prefix, suffix=suffix, mode=mode, request=request,
                language_id=language_id, shape=shape, snippet_header=header)


def finish_completion(plan: Plan, generated: str) -> str:
    """Engine output -> the text to insert at the cursor ("" = no item)."""
    return postprocess.finish(generated, plan.shape)


def stream_completion(plan: Plan, partial: str) -> str:
    """A still-growing engine output -> the part that is safe to show now (a prefix of the final text)."""
    return postprocess.stream_view(partial, plan.shape)
