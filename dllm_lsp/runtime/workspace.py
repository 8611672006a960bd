"""The workspace's files as the repository context reads them (core/repo.py's `read`), and the
per-server state of that context (`RepoSource`: the workspace and the ring of recent chunks).

    ws = Workspace(["/home/me/project"])
    rel = ws.relative("file:///home/me/project/pkg/mod.py")        # "pkg/mod.py" (None outside)
    read = ws.reader(open_texts)                                  # rel path -> text or None

An open document's text (unsaved edits included) wins over the disk. A file on disk is read
once and kept while its size and modification time stay the same, so the same unchanged file
is the same string object (core/repo.py caches its outline by it). Paths never leave the root
(`..` and links out of it read nothing), files over MAX_FILE_BYTES and undecodable files are
skipped. No roots (a client that sent none): nothing is read.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable, Dict, Mapping, Optional, Sequence, Tuple
from urllib.parse import unquote, urlparse

from dllm_lsp.core.plan import RepoView
from dllm_lsp.core.repo import RecentChunks

MAX_FILE_BYTES = 512 * 1024
MAX_KEPT_FILES = 512
FRESH_S = 2.0            # a path's answer is reused this long without a look at the disk


def uri_path(uri: str) -> Optional[Path]:
    """A file: URI (or a plain path) -> an absolute Path, or None for other schemes."""
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if not parsed.scheme and uri.startswith("/"):
        return Path(uri)
    return None


class Workspace:
    def __init__(self, roots: Sequence[str] = ()):
        self.roots = []
        for root in roots:
            path = uri_path(root) if "://" in root else Path(root)
            if path is not None and path.is_dir():
                self.roots.append(path.resolve())
        self._kept: Dict[Path, Tuple[int, int, str]] = {}      # path -> (size, mtime_ns, text)
        self._seen: Dict[Path, Tuple[float, Optional[str]]] = {}   # path -> (when looked at, text or None)

    def root_of(self, path: Path) -> Optional[Path]:
        """The deepest root holding `path`, or None."""
        best = None
        for root in self.roots:
            if path == root or root in path.parents:
                if best is None or len(root.parts) > len(best.parts):
                    best = root
        return best

    def relative(self, uri: str) -> Optional[str]:
        """The document's path relative to its root (posix), or None outside every root."""
        path = uri_path(uri)
        if path is None:
            return None
        path = Path(os.path.abspath(path))
        root = self.root_of(path)
        return path.relative_to(root).as_posix() if root is not None else None

    def name_of(self, uri: str) -> str:
        """The repository name for the layout: the folder name of the document's root."""
        path = uri_path(uri)
        root = self.root_of(Path(os.path.abspath(path))) if path is not None else None
        return root.name if root is not None else ""

    def reader(self, uri: str, open_texts: Mapping[str, str] = {}) -> Callable[[str], Optional[str]]:
        """rel path -> text, for paths under the root of `uri`; open documents ({uri: text}) first."""
        path = uri_path(uri)
        root = self.root_of(Path(os.path.abspath(path))) if path is not None else None
        by_path = {}
        for other, text in open_texts.items():
            p = uri_path(other)
            if p is not None:
                by_path[Path(os.path.abspath(p))] = text

        def read(rel: str) -> Optional[str]:
            if root is None:
                return None
            target = Path(os.path.abspath(root / rel))
            if root not in target.parents:
                return None
            if target in by_path:
                return by_path[target]
            return self._read_disk(root, target)
        return read

    def _read_disk(self, root: Path, target: Path) -> Optional[str]:
        """The file's text (kept while its size and mtime stay), or None; the answer for a path is
        reused for FRESH_S without looking at the disk (a module lookup tries several paths)."""
        seen = self._seen.get(target)
        now = time.monotonic()
        if seen is not None and now - seen[0] < FRESH_S:
            return seen[1]
        text = self._read_now(root, target)
        if len(self._seen) >= MAX_KEPT_FILES * 4:
            self._seen.clear()
        self._seen[target] = (now, text)
        return text

    def _read_now(self, root: Path, target: Path) -> Optional[str]:
        try:
            real = target.resolve()
            if root not in real.parents:                   # a link out of the root
                return None
            st = real.stat()
        except OSError:
            return None
        if not real.is_file() or st.st_size > MAX_FILE_BYTES:
            return None
        kept = self._kept.get(real)
        if kept is not None and kept[:2] == (st.st_size, st.st_mtime_ns):
            return kept[2]
        try:
            text = real.read_bytes().decode("utf-8")
        except (OSError, UnicodeDecodeError):
            return None
        if len(self._kept) >= MAX_KEPT_FILES:
            self._kept.clear()
        self._kept[real] = (st.st_size, st.st_mtime_ns, text)
        return text


class RepoSource:
    """What the repository context of a server's documents is made of: the workspace folders
    and the ring of chunks of recently edited or viewed documents (keyed by workspace path, or
    by file name outside the workspace)."""

    DISK_CHECK_S = 10.0          # files on disk are looked at again at least this often

    def __init__(self, workspace: Optional[Workspace] = None):
        self.workspace = workspace or Workspace()
        self.recent = RecentChunks()
        self.edits: Dict[str, int] = {}      # uri -> edits and cursor rests seen (the other files' state)

    def path_of(self, uri: str) -> str:
        rel = self.workspace.relative(uri)
        if rel is not None:
            return rel
        path = uri_path(uri)
        return path.name if path is not None else uri.rsplit("/", 1)[-1]

    def visited(self, uri: str, text: str, offset: int) -> None:
        self.recent.add(self.path_of(uri), text, text.count("\n", 0, offset))
        self.edits[uri] = self.edits.get(uri, 0) + 1

    def generation(self, uri: str) -> tuple:
        """What the other files' state is known by: the edits of the other documents, the
        workspace, and a clock tick every DISK_CHECK_S (changes made outside the editor)."""
        return (sum(self.edits.values()) - self.edits.get(uri, 0), id(self.workspace),
                int(time.monotonic() // self.DISK_CHECK_S))

    def closed(self, uri: str) -> None:
        self.recent.forget(self.path_of(uri))

    def view(self, uri: str, open_texts: Mapping[str, str], layout: bool) -> Optional[RepoView]:
        """The document's RepoView, or None outside the workspace."""
        path = self.workspace.relative(uri)
        if path is None:
            return None
        return RepoView(name=self.workspace.name_of(uri), path=path, read=self.workspace.reader(uri, open_texts),
                        recent=self.recent.others(path), layout=layout, generation=self.generation(uri))
