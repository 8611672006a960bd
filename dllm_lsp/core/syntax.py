"""Syntax decisions: complete here at all? one line or a block? is the cursor in a comment or string?

tree-sitter parses the document when a grammar is installed: Python always (tree-sitter-python
is a dependency), other languages through the per-language grammar wheels (extras `langs`:
tree-sitter-javascript, -typescript, -go, -rust, -java, -c, -cpp), loaded lazily once. Without a
grammar a lexical scan of the current line (quotes, line-comment marker) and indentation stand
in. The rules (see `decide_mode`):

    cursor inside a word                       -> None  (no completion)
    inside a comment or a string               -> "line"
    text after the cursor on its line          -> "line" (the rest of the line)
    blank line, or end of line, after a block opener (":" in Python, "{" elsewhere) -> "block"
    anything else                              -> "line"
"""
from __future__ import annotations

import importlib
import threading
from dataclasses import dataclass
from functools import lru_cache
from typing import Optional

Mode = str  # "line" | "block"


@dataclass(frozen=True)
class LanguageSpec:
    module: Optional[str]        # grammar wheel, e.g. "tree_sitter_python"
    function: str                # its Language factory
    comment: Optional[str]       # line-comment marker
    indent_scoped: bool          # scope ends are indentation (Python) rather than braces
    opener: str                  # what ends a line that opens a block
    quotes: str = "\"'"


LANGUAGES = {
    "python": LanguageSpec("tree_sitter_python", "language", "#", True, ":"),
    "javascript": LanguageSpec("tree_sitter_javascript", "language", "//", False, "{", "\"'`"),
    "javascriptreact": LanguageSpec("tree_sitter_javascript", "language", "//", False, "{", "\"'`"),
    "typescript": LanguageSpec("tree_sitter_typescript", "language_typescript", "//", False, "{", "\"'`"),
    "typescriptreact": LanguageSpec("tree_sitter_typescript", "language_tsx", "//", False, "{", "\"'`"),
    "go": LanguageSpec("tree_sitter_go", "language", "//", False, "{", "\"'`"),
    "rust": LanguageSpec("tree_sitter_rust", "language", "//", False, "{", "\""),
    "java": LanguageSpec("tree_sitter_java", "language", "//", False, "{"),
    "c": LanguageSpec("tree_sitter_c", "language", "//", False, "{"),
    "cpp": LanguageSpec("tree_sitter_cpp", "language", "//", False, "{"),
}
FALLBACK = LanguageSpec(None, "", None, False, "{")
# file extension -> LSP language id: the one table (the server for clients that send no
# languageId, `dllm-lsp complete`, and the HTTP server's snippet headers)
EXTENSIONS = {"py": "python", "pyi": "python", "js": "javascript", "mjs": "javascript", "cjs": "javascript",
              "jsx": "javascriptreact", "ts": "typescript", "tsx": "typescriptreact", "go": "go", "rs": "rust",
              "java": "java", "c": "c", "h": "c", "cc": "cpp", "cpp": "cpp", "hpp": "cpp", "cxx": "cpp"}

COMMENT_TYPES = {"comment", "line_comment", "block_comment"}
STRING_TYPES = {"string", "string_content", "string_fragment", "template_string", "string_literal",
                "raw_string_literal", "interpreted_string_literal", "char_literal", "character_literal",
                "text_block"}
NOT_BLOCK_COLON_PARENTS = {"dictionary", "pair", "lambda", "slice", "subscript", "typed_parameter",
                           "typed_default_parameter", "dictionary_comprehension", "format_specifier"}


def spec_for(language_id: str) -> LanguageSpec:
    return LANGUAGES.get(language_id, FALLBACK)


def language_for_path(path: str) -> str:
    """The language id of a file name, path or URI by its extension; an unknown extension is
    its own id, no extension "plaintext"."""
    name = path.rsplit("/", 1)[-1]
    ext = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    return EXTENSIONS.get(ext, ext or "plaintext")


_parser_lock = threading.Lock()


@lru_cache(maxsize=None)
def _parser(module: str, function: str):
    """A tree_sitter.Parser for the grammar, or None when the wheel is not installed."""
    try:
        from tree_sitter import Language, Parser
        grammar = importlib.import_module(module)
        return Parser(Language(getattr(grammar, function)()))
    except (ImportError, AttributeError, ValueError, TypeError):
        return None


def parse(text: str, language_id: str):
    """A tree-sitter Tree for `text`, or None without a grammar."""
    spec = spec_for(language_id)
    parser = _parser(spec.module, spec.function) if spec.module else None
    if parser is None:
        return None
    with _parser_lock:                       # a Parser is not safe to share between threads
        return parser.parse(text.encode("utf-8"))


def has_grammar(language_id: str) -> bool:
    spec = spec_for(language_id)
    return bool(spec.module) and _parser(spec.module, spec.function) is not None


# ---- lexical helpers (no grammar needed) ------------------------------------------------------

def code_brackets(line: str, quotes: str, comment: Optional[str] = None, quote: Optional[str] = None) -> tuple:
    """Scan one line left to right outside its string literals (one-line quotes with backslash
    escapes; the scan starts inside `quote` when given) up to a line comment -> (the brackets
    "()[]{}" met as [(index, char)], the quote still open at the end or None, the index where a
    line comment starts or None)."""
    found, i = [], 0
    while i < len(line):
        ch = line[i]
        if quote:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = None
        elif ch in quotes:
            quote = ch
        elif comment and line.startswith(comment, i):
            return found, None, i
        elif ch in "()[]{}":
            found.append((i, ch))
        i += 1
    return found, quote, None


def scan_line(line: str, spec: LanguageSpec) -> tuple:
    """Scan `line` left to right -> (open quote char or None, index where a line comment starts or None)."""
    return code_brackets(line, spec.quotes, spec.comment)[1:]


def brackets_left_open(lines, spec: LanguageSpec) -> str:
    """The openers ("([{") that `lines` (the lines above the cursor's) leave unclosed, innermost
    last: each line's code outside strings and line comments, lines inside a triple-quoted
    string skipped. Lexical, like scan_line: a bracket in a multi-line string of another kind
    can mislead it."""
    stack = []
    in_triple = None
    for line in lines:
        if in_triple:
            if line.count(in_triple) % 2:
                in_triple = None
            continue
        triple = next((q for q in ('"""', "'''") if line.count(q) % 2), None)
        code = line.split(triple)[0] if triple else line
        in_triple = triple
        for _, ch in code_brackets(code, spec.quotes, spec.comment)[0]:
            if ch in "([{":
                stack.append(ch)
            elif stack and stack[-1] == "([{"[")]}".index(ch)]:
                stack.pop()
    return "".join(stack)


def strip_line_comment(line: str, spec: LanguageSpec) -> str:
    _, at = scan_line(line, spec)
    return line if at is None else line[:at]


def is_word_char(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


# ---- decisions --------------------------------------------------------------------------------

def in_comment_or_string(text: str, offset: int, language_id: str, tree=None) -> bool:
    spec = spec_for(language_id)
    line_start = text.rfind("\n", 0, offset) + 1
    quote, comment_at = scan_line(text[line_start:offset], spec)
    if quote is not None or comment_at is not None:
        return True
    tree = tree if tree is not None else parse(text, language_id)
    if tree is None or offset == 0 or text[offset - 1] == "\n":
        return False
    b = len(text[:offset].encode("utf-8"))
    node = tree.root_node.descendant_for_byte_range(b - 1, b)
    while node is not None:
        if node.type in COMMENT_TYPES:
            return True
        if node.type in STRING_TYPES and node.start_byte < b < node.end_byte:
            return True
        node = node.parent
    return False


def last_code_char(text: str, offset: int, spec: LanguageSpec) -> tuple:
    """(char, offset) of the last non-space code character before `offset`, skipping comments."""
    end = offset
    while True:
        start = text.rfind("\n", 0, end) + 1
        code = strip_line_comment(text[start:end], spec).rstrip()
        if code:
            return code[-1], start + len(code) - 1
        if start == 0:
            return "", -1
        end = start - 1                          # the newline that ends the previous line


def after_block_opener(text: str, offset: int, language_id: str, tree=None) -> bool:
    """Is the last code before the cursor (over blank lines and comments) a block opener?"""
    spec = spec_for(language_id)
    ch, at = last_code_char(text, offset, spec)
    if not ch or ch not in spec.opener:
        return False
    if spec.opener == ":":
        tree = tree if tree is not None else parse(text, language_id)
        if tree is not None:
            b = len(text[:at].encode("utf-8"))
            node = tree.root_node.descendant_for_byte_range(b, b + 1)
            if node is not None and node.parent is not None and node.parent.type == "ERROR":
                return _error_colon_opens_block(node)
            while node is not None and node.type != "module":
                if node.type in NOT_BLOCK_COLON_PARENTS:
                    return False
                if node.type in ("block", "function_definition", "class_definition"):
                    break
                node = node.parent
    return True


def _error_colon_opens_block(colon) -> bool:
    """In unfinished code (an ERROR node): a ':' opens a block unless a bracket or lambda is open before it."""
    depth, lambda_open = 0, False
    for sibling in colon.parent.children:
        if sibling.start_byte >= colon.start_byte:
            break
        depth += {"(": 1, "[": 1, "{": 1, ")": -1, "]": -1, "}": -1}.get(sibling.type, 0)
        lambda_open = lambda_open or sibling.type == "lambda"
    return depth <= 0 and not lambda_open


def local_region(text: str, offset: int, before: int = 6000, after: int = 1500) -> tuple:
    """(lo, hi) around `offset` to parse instead of the whole document (parsing 120 kB costs ~10 ms).

    lo is the start of an unindented line (a top-level statement, so the parse starts clean)
    within `before` characters when there is one; hi is the end of a line about `after` later.
    """
    if len(text) <= before + after:
        return 0, len(text)
    lo = 0
    floor = max(0, offset - before)
    i = text.rfind("\n", 0, offset)
    while i >= floor:
        if i + 1 < len(text) and not text[i + 1].isspace():
            lo = i + 1
            break
        i = text.rfind("\n", 0, i)
    if lo == 0 and floor > 0:
        lo = text.rfind("\n", 0, floor) + 1
    hi = text.find("\n", min(len(text), offset + after))
    return lo, len(text) if hi < 0 else hi


def decide_mode(text: str, offset: int, language_id: str) -> Optional[Mode]:
    """"line", "block" or None (no completion here); rules in the module docstring."""
    lo, hi = local_region(text, offset)
    text, offset = text[lo:hi], offset - lo
    line_end = text.find("\n", offset)
    rest = text[offset: len(text) if line_end < 0 else line_end].rstrip("\r")
    if offset < len(text) and rest and is_word_char(rest[0]) and offset > 0 and is_word_char(text[offset - 1]):
        return None
    tree = parse(text, language_id)
    if in_comment_or_string(text, offset, language_id, tree):
        return "line"
    if rest.strip():
        return "line"
    return "block" if after_block_opener(text, offset, language_id, tree) else "line"
