"""Text sources for harvesting, a seeded train/held-out split by document, and fixed-length contexts.

A text source is named by one string (:func:`documents`):

- ``"python-doc"``: the reST sources of the Python documentation shipped by Debian
  (``apt-get install python3.11-doc``): ``/usr/share/doc/python3.*/html/_sources/**/*.rst.txt``,
  one document per file (497 files, ≈ 2.9 M SmolLM2 tokens for 3.11);
- ``"gcide"``: the GNU Collaborative International Dictionary of English
  (``apt-get install dict-gcide``): ``/usr/share/dictd/gcide.dict.dz`` (gzip-readable), its
  entries grouped in order into documents of at least ``GCIDE_DOC_CHARS`` characters;
- ``"hf:PATH"`` or a folder written by ``datasets.Dataset.save_to_disk``: one document per row
  (column ``text_column``; the 'train' split of a DatasetDict); needs ``pip install datasets``;
- any other string: a text file, a folder (every file below it, recursively) or a glob pattern
  (``"notes/**/*.md"``); one document per file, files in sorted order, decoded as UTF-8 with
  replacement; files holding a NUL byte (binary) are skipped;
- ``"A+B"`` (e.g. ``"python-doc+gcide"``): the documents of the named sources mixed by
  :func:`mix_documents` — the next document comes from the source that has yielded the fewest
  characters so far (the first on ties), so the mix is about even in characters until one source
  runs out, then the rest of the others follows. Deterministic; ids stay those of each source
  (prefixed with the source's position, ``"1/path"``, except for the named sources
  'python-doc' and 'gcide', whose ids cannot collide, so their split is the same alone or mixed).

Split (:func:`in_split`): a document is held out when u(seed, id) < ``held_out_fraction``, with
u the first 8 bytes of sha256(f"{seed}:{id}") read as a number in [0, 1). The rule looks at one
document at a time, so it streams, is independent of the corpus order, and does not move
documents between the parts when others are added; the held-out share is ``held_out_fraction``
in expectation (not exactly).

Contexts (:func:`iter_contexts`): documents are tokenised without special tokens, each followed
by the EOS token (when the tokenizer has one), concatenated into one stream, and cut into
consecutive pieces of ``ctx_len − 1`` tokens each prefixed with the BOS token (``ctx_len``
tokens, no prefix, with ``prepend_bos=False`` or a tokenizer without BOS/EOS). A final piece
shorter than that is dropped. The contexts are a pure function of the documents, tokenizer and
options, so a harvest can skip any number of them deterministically.
"""

from __future__ import annotations

import glob as globmod
import gzip
import hashlib
import importlib.util
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor

PYTHON_DOC_GLOB = "/usr/share/doc/python3*/html/_sources"
GCIDE_PATH = "/usr/share/dictd/gcide.dict.dz"
GCIDE_DOC_CHARS = 4000
_ENTRY = re.compile(r"\n\n(?=\S)")


class Doc(NamedTuple):
    """One document of a text source."""

    id: str
    """Stable identifier (relative path, row index, ...); the split hashes it."""
    text: str
    """The document's text."""


def _read_text(path: Path) -> str | None:
    data = path.read_bytes()
    return None if b"\x00" in data else data.decode("utf-8", errors="replace")


def python_doc_documents(root: str | os.PathLike | None = None) -> Iterator[Doc]:
    """The Python documentation's reST sources (Debian python3.X-doc), one document per file."""
    if root is None:
        roots = sorted(globmod.glob(PYTHON_DOC_GLOB))
        if not roots:
            raise FileNotFoundError(f"the Python documentation sources are not installed ({PYTHON_DOC_GLOB} "
                                    "is missing): `apt-get install python3.11-doc` (as root)")
        root = roots[-1]
    root = Path(root)
    files = sorted(root.rglob("*.rst.txt"))
    if not files:
        raise FileNotFoundError(f"no *.rst.txt files under {str(root)!r}: `apt-get install python3.11-doc`")
    for f in files:
        text = _read_text(f)
        if text:
            yield Doc(f.relative_to(root).as_posix(), text)


def gcide_documents(path: str | os.PathLike = GCIDE_PATH, doc_chars: int = GCIDE_DOC_CHARS) -> Iterator[Doc]:
    """GCIDE entries (split at a blank line followed by a non-blank line), grouped in order into
    documents of at least ``doc_chars`` characters; the ``00-database-*`` header entries are skipped."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{str(path)!r} does not exist: install the dictionary with "
                                "`apt-get install dict-gcide` (as root)")
    with gzip.open(path, "rt", encoding="utf-8", errors="replace") as f:
        text = f.read()
    buf: list[str] = []
    n, i = 0, 0
    for entry in _ENTRY.split(text):
        entry = entry.strip("\n")
        if not entry or entry.startswith("00-database"):
            continue
        buf.append(entry)
        n += len(entry)
        if n >= doc_chars:
            yield Doc(f"gcide:{i:06d}", "\n\n".join(buf))
            buf, n, i = [], 0, i + 1
    if buf:
        yield Doc(f"gcide:{i:06d}", "\n\n".join(buf))


def _is_hf_dataset(path: Path) -> bool:
    return path.is_dir() and any((path / f).is_file() for f in ("dataset_info.json", "state.json",
                                                                "dataset_dict.json"))


def hf_documents(path: str | os.PathLike, column: str = "text") -> Iterator[Doc]:
    """Rows of a Hugging Face dataset saved with ``save_to_disk`` (the 'train' split of a DatasetDict)."""
    if importlib.util.find_spec("datasets") is None:
        raise ModuleNotFoundError("reading a Hugging Face dataset needs the package 'datasets': "
                                  "`pip install datasets` (torch is not pulled in)")
    from datasets import DatasetDict, load_from_disk

    ds = load_from_disk(str(path))
    if isinstance(ds, DatasetDict):
        if "train" not in ds:
            raise ValueError(f"the DatasetDict in {str(path)!r} has no 'train' split (it has {list(ds)})")
        ds = ds["train"]
    if column not in ds.column_names:
        raise ValueError(f"the dataset in {str(path)!r} has no column {column!r} (columns: {ds.column_names})")
    for i, row in enumerate(ds):
        if row[column]:
            yield Doc(f"row:{i}", str(row[column]))


def file_documents(pattern: str | os.PathLike) -> Iterator[Doc]:
    """A text file, every file under a folder, or the files matching a glob; one document each."""
    path = Path(pattern).expanduser()
    if path.is_file():
        files, base = [path], path.parent
    elif path.is_dir():
        files, base = sorted(p for p in path.rglob("*") if p.is_file()), path
    else:
        files = sorted(Path(p) for p in globmod.glob(str(path), recursive=True) if Path(p).is_file())
        base = Path(os.path.commonpath([str(f.parent) for f in files])) if files else Path(".")
        if not files:
            raise FileNotFoundError(f"text source {str(pattern)!r} is not a file, a folder or a glob matching "
                                    "files (named sources: 'python-doc', 'gcide', 'hf:PATH')")
    for f in files:
        text = _read_text(f)
        if text:
            yield Doc(f.relative_to(base).as_posix(), text)


def _tagged(k: int, spec: str, text_column: str) -> Iterator[Doc]:
    """The documents of ``spec``, ids prefixed with ``k/`` unless it is a named source."""
    for d in documents(spec, text_column=text_column):
        yield d if spec in ("python-doc", "gcide") else Doc(f"{k}/{d.id}", d.text)


def mix_documents(sources: list[Iterable[Doc]]) -> Iterator[Doc]:
    """Documents of several sources, mixed evenly in characters (module docstring, ``"A+B"``)."""
    its = [iter(s) for s in sources]
    chars = [0] * len(its)
    live = list(range(len(its)))
    while live:
        i = min(live, key=lambda j: (chars[j], j))
        doc = next(its[i], None)
        if doc is None:
            live.remove(i)
            continue
        chars[i] += len(doc.text)
        yield doc


def documents(spec: str, *, text_column: str = "text") -> Iterator[Doc]:
    """The documents of the text source named by ``spec`` (see the module docstring)."""
    if "+" in spec:
        parts = spec.split("+")
        if any(not p for p in parts):
            raise ValueError(f"text == {spec!r}: a mix needs a source name on each side of every '+'")
        return mix_documents([_tagged(k, p, text_column) for k, p in enumerate(parts)])
    if spec == "python-doc":
        return python_doc_documents()
    if spec == "gcide":
        return gcide_documents()
    if spec.startswith("hf:"):
        return hf_documents(spec[3:], text_column)
    if _is_hf_dataset(Path(spec).expanduser()):
        return hf_documents(spec, text_column)
    return file_documents(spec)


def held_out_score(doc_id: str, seed: int) -> float:
    """u(seed, id) in [0, 1): the first 8 bytes of sha256(f"{seed}:{id}") over 2**64."""
    digest = hashlib.sha256(f"{seed}:{doc_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def in_split(doc_id: str, split: str, held_out_fraction: float, seed: int) -> bool:
    """Whether document ``doc_id`` belongs to ``split`` ('train', 'heldout' or 'all')."""
    if split == "all":
        return True
    held = held_out_score(doc_id, seed) < held_out_fraction
    if split == "heldout":
        return held
    if split == "train":
        return not held
    raise ValueError(f"split == {split!r}, must be 'train', 'heldout' or 'all'")


def split_documents(docs: Iterable[Doc | str], split: str, held_out_fraction: float = 0.1,
                    seed: int = 0) -> Iterator[Doc]:
    """The documents of ``docs`` in ``split`` (plain strings get ids 'doc:<index>')."""
    if not 0.0 <= held_out_fraction < 1.0:
        raise ValueError(f"held_out_fraction == {held_out_fraction!r}, must be in [0, 1)")
    for i, d in enumerate(docs):
        doc = d if isinstance(d, Doc) else Doc(f"doc:{i}", str(d))
        if in_split(doc.id, split, held_out_fraction, seed):
            yield doc


def special_ids(tokenizer: Any, prepend_bos: bool = True) -> tuple[int | None, int | None]:
    """(bos, eos) token ids used by :func:`iter_contexts` (BOS falls back to EOS; None if absent)."""
    eos = getattr(tokenizer, "eos_token_id", None)
    bos = getattr(tokenizer, "bos_token_id", None)
    bos = (bos if bos is not None else eos) if prepend_bos else None
    return bos, eos


def iter_contexts(docs: Iterable[Doc | str], tokenizer: Any, ctx_len: int = 128,
                  prepend_bos: bool = True) -> Iterator[Tensor]:
    """(ctx_len,) int64 token-id contexts cut from the concatenated documents (module docstring)."""
    if not (isinstance(ctx_len, int) and ctx_len >= 2):
        raise ValueError(f"ctx_len == {ctx_len!r}, must be an integer >= 2")
    bos, eos = special_ids(tokenizer, prepend_bos)
    body = ctx_len - (bos is not None)
    buf: list[int] = []
    for d in docs:
        text = d.text if isinstance(d, Doc) else str(d)
        buf.extend(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])
        if eos is not None:
            buf.append(eos)
        start = 0
        while len(buf) - start >= body:
            piece = buf[start:start + body]
            yield torch.tensor(piece if bos is None else [bos, *piece], dtype=torch.long)
            start += body
        del buf[:start]


__all__ = ["Doc", "documents", "mix_documents", "python_doc_documents", "gcide_documents", "hf_documents", "file_documents",
           "held_out_score", "in_split", "split_documents", "special_ids", "iter_contexts",
           "PYTHON_DOC_GLOB", "GCIDE_PATH"]
