"""The engine's public data types: what callers send and what they get back.

These are plain dataclasses with no torch inside, so the language server can import
them cheaply and build requests without touching tensors.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Literal, Optional

Policy = Literal["quota", "threshold", "entropy"]
CacheMode = Literal["auto", "none", "prefix", "dual"]
FinishReason = Literal["eos", "length", "cancelled", "deadline", "error"]


@dataclass(frozen=True)
class RepoContext:
    """Other files of the repository in front of the current one, for models trained on a repo
    layout (Qwen2.5-Coder: `<|repo_name|>name <|file_sep|>path text ... <|file_sep|>path` and then
    the FIM prompt). files: ((workspace-relative path, text), ...), oldest first; path: the
    current file's. A model without those tokens ignores it (`Engine.reads_repo_layout`)."""

    name: str
    path: str
    files: tuple = ()


@dataclass(frozen=True)
class InfillRequest:
    """Fill the span between `prefix` and `suffix` with at most `max_new_tokens` tokens.

    policy     which masks to commit after each forward pass:
                 "quota"     fixed number per step, most confident first (LLaDA baseline);
                             `tokens_per_step` of them (1 = one token per forward, the ceiling)
                 "threshold" every mask whose top-1 probability >= `threshold`, at least one
                 "entropy"   most confident masks while their summed entropy <= `entropy_bound`
    block_size semi-autoregressive blocks of this many tokens, left to right
               (None: the model's own block size, or the whole span for bidirectional models)
    cache      bidirectional models: "none" | "prefix" | "dual" (Fast-dLLM approximations);
               block-causal models always use their exact cache ("auto" picks the best)
    temperature 0 = greedy; > 0 samples with `seed`
    deadline_ms stop after this long and return the current best guess
    min_new_tokens the first this many span tokens may not be eos/pad (an editor asking on a
               blank line wants a line, not nothing); 0 = the model may answer with nothing
    drafting   AR models (decoding/verify.py): fill the block after the last committed token with
               draft tokens that the same pass verifies, so one pass commits several tokens;
               the text is identical either way (False: one token per forward pass)
    max_draft_tokens at most this many drafts per pass (the block is 1 + this many slots)
    draft_sources further token sequences to look drafts up in (other open files, the previous
               suggestion); the prompt itself is always searched
    ends_at_newline the caller keeps only the text up to the first newline (a line completion): AR
               models end each pass's drafts with the first token that holds a newline, so a pass
               carries no rows past the line's end (the text is the same; passes get cheaper)
    draft_with "auto": lookup and, where the engine has a trained drafter (head or mask slots), its guesses;
               "lookup" or "trained": that source alone (for measuring each)
    draft_tree verify several chains of drafts in one pass as a tree (decoding/tree.py) instead of the
               one chosen beforehand: lookup's and the draft head's, the head proposing a tree of
               its likeliest guesses (DraftHead.propose_tree) rather than one chain (greedy only;
               sampling drafts one chain). Off by default: more tokens per pass, but a pass
               over more rows costs more on a CPU (docs/models.md has the numbers)
    tree_nodes with draft_tree: at most this many of the draft head's guesses in a pass's tree
    raw_prompt AR models only: `prefix` is the whole prompt, token for token as written (special
               tokens such as <|im_start|> in the text become their special ids), with no FIM
               tokens, no BOS and no suffix (`suffix` must be empty); the prompt is cut from the
               left to fit. For chat templates (the HTTP server's /v1/chat/completions); the
               block-diffusion decoders refuse it (ValueError)
    repo       other files of the repository as context (RepoContext), before the FIM prompt, on
               models that read the repo layout; None: the file alone
    runner_ups AR models, greedy, chain drafts: record for each committed token the model's second
               choice there and its logit gap (InfillResult.runner_ups), where a caller branches
               to offer alternatives; the text is the same either way
    suffix_reuse AR models: after typing before an unchanged suffix, reuse its cached keys/values
               shifted to their new positions instead of computing them (llama.cpp's --cache-reuse;
               decoding/suffix_reuse.py): an approximation, a different model (off: exact)
    """

    prefix: str
    suffix: str = ""
    max_new_tokens: int = 32
    policy: Policy = "threshold"
    threshold: float = 0.9
    entropy_bound: float = 0.5
    tokens_per_step: int = 1
    block_size: Optional[int] = None
    cache: CacheMode = "auto"
    temperature: float = 0.0
    seed: int = 0
    deadline_ms: Optional[float] = None
    stop_at_eos: bool = True
    min_new_tokens: int = 0
    drafting: bool = True
    max_draft_tokens: int = 8
    draft_sources: tuple = ()
    draft_with: str = "auto"
    draft_tree: bool = False
    tree_nodes: int = 12
    raw_prompt: bool = False
    ends_at_newline: bool = False
    repo: Optional[RepoContext] = None
    runner_ups: bool = False
    suffix_reuse: bool = False


@dataclass(frozen=True)
class InfillUpdate:
    """Emitted after every forward pass.

    stable    text committed left to right so far; only ever grows, never retracted
    draft     the current best guess for the whole span (committed + predicted)
    forwards  forward passes so far
    committed span tokens committed so far; total: span length currently in play
    """

    stable: str
    draft: str
    forwards: int
    committed: int
    total: int
    result: Optional["InfillResult"] = None   # set on the last update only


@dataclass
class DraftStats:
    """What the drafts of one request did (the verify loop; zeros for the diffusion families).
    A "trained" draft comes from the trained drafter (draft head or mask slots), the others from
    prompt lookup; slot i of a trained chain is its (i+1)-th draft."""

    drafted: int = 0                # drafts verified
    accepted: int = 0               # ... and committed
    trained_drafted: int = 0        # drafts from the trained drafter (a tree counts each node once)
    trained_accepted: int = 0       # ... accepted (the longest accepted run of its chains)
    slot_tries: List[int] = field(default_factory=list)   # passes whose trained chain reached slot i
    slot_hits: List[int] = field(default_factory=list)    # ... with slots 0..i all accepted
    tree_passes: int = 0            # passes that verified several chains as one tree
    branch_wins: int = 0            # ... and accepted a node outside the tree's first chain


@dataclass(frozen=True)
class InfillResult:
    text: str
    forwards: int
    new_tokens: int
    ms: float
    finish_reason: FinishReason
    token_ids: tuple = field(default=(), repr=False)
    drafts: DraftStats = field(default_factory=DraftStats, repr=False)
    # with InfillRequest.runner_ups: ((second choice id, logit gap to the first), ...) for the
    # first len(runner_ups) <= len(token_ids) tokens (a draft tree's passes record none)
    runner_ups: tuple = field(default=(), repr=False)

    @property
    def tokens_per_forward(self) -> float:
        return self.new_tokens / self.forwards if self.forwards else 0.0
