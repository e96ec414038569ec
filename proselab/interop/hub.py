"""Hugging Face model ids (``gpt2``, ``Helsinki-NLP/opus-mt-en-es``, ``google/flan-t5-small@main``)
wherever a run directory is read: ``huggingface_hub`` downloads the files proselab reads into its
cache once (``HF_HOME`` / ``HF_HUB_CACHE``), and with ``HF_HUB_OFFLINE=1`` uses that cache alone.

A local path always wins: only a string naming no existing file or directory, shaped as a model
id (``name`` or ``org/name``, an optional ``@revision``), is looked up.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..checkpoint import RunError

# The files a Hugging Face directory holds that proselab reads (interop/*.py, hf_tokenizers.py).
CONFIG_FILES = ["config.json", "generation_config.json"]
TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt",
                   "target_vocab.json", "source.spm", "target.spm", "spiece.model"]
SAFETENSORS_FILES = ["model.safetensors", "model.safetensors.index.json", "model-*-of-*.safetensors"]
PICKLE_FILES = ["pytorch_model.bin"]  # read (weights_only) only when a repository has no safetensors
# A repository id as the Hub allows them: one optional namespace, letters, digits, - _ . (no "--" or "..").
_HUB_ID = re.compile(r"(?:[A-Za-z0-9][\w.-]{0,95}/)?[A-Za-z0-9][\w.-]{0,95}(?:@[\w./-]{1,200})?")


def is_hub_id(spec: str | Path) -> bool:
    """Whether ``spec`` names no local file or directory and reads as a Hugging Face model id."""
    if not isinstance(spec, (str, Path)):
        return False
    spec = str(spec)
    repo = spec.partition("@")[0]
    if (not _HUB_ID.fullmatch(spec) or "--" in repo or ".." in repo or repo.endswith((".", ".json", ".txt"))
            or Path(spec).expanduser().exists()):
        return False
    head = repo.split("/")[0]
    return "/" not in repo or not Path(head).is_dir()  # runs/name under an existing runs/: a local path, mistyped


def resolve(spec: str | Path, weights: bool = True) -> Path:
    """The local directory of ``spec``: itself when it is not a model id, else the snapshot of
    the model id (downloaded into the Hugging Face cache when not there yet; without ``weights``,
    only its config and tokenizer files).

    Raises:
        RunError: a one-line reason when the id cannot be resolved (offline and not cached, no
            such model or revision, the Hub unreachable).
    """
    if not is_hub_id(spec):
        return Path(spec).expanduser()
    repo_id, _, revision = str(spec).partition("@")
    return _download(repo_id, revision or None, str(spec), weights)


def _download(repo_id: str, revision: str | None, spec: str, weights: bool) -> Path:
    import huggingface_hub
    from huggingface_hub import constants, errors

    cache = constants.HF_HUB_CACHE
    offline = constants.HF_HUB_OFFLINE
    where = f"the Hugging Face cache ({cache})"
    try:
        patterns = _patterns(repo_id, revision, offline) if weights else CONFIG_FILES + TOKENIZER_FILES
        path = huggingface_hub.snapshot_download(repo_id, revision=revision, allow_patterns=patterns)
    except errors.RevisionNotFoundError:
        raise RunError(f"'{repo_id}' has no revision '{revision}' on the Hugging Face Hub; give a branch, tag or "
                       "commit it has, or leave out @revision") from None
    except (errors.GatedRepoError, errors.RepositoryNotFoundError, errors.HFValidationError):
        raise RunError(f"'{spec}' is neither a local directory nor a model on the Hugging Face Hub (a private or "
                       "gated model needs `hf auth login` first); check the spelling") from None
    except errors.IncompleteSnapshotError:
        raise RunError(f"the copy of '{spec}' in {where} is incomplete (an interrupted download): run again with "
                       "internet (HF_HUB_OFFLINE=0) to complete it") from None
    except errors.LocalEntryNotFoundError:
        if offline:
            raise RunError(f"'{spec}' is neither a local directory nor in {where}, and downloads are off "
                           "(HF_HUB_OFFLINE=1): run once with HF_HUB_OFFLINE=0 on a machine with internet, or "
                           f"download it elsewhere (`hf download {repo_id}`) and pass its directory") from None
        raise RunError(f"'{spec}' is neither a local directory nor in {where}, and the Hugging Face Hub cannot be "
                       "reached: check the connection, or download it elsewhere and pass its directory") from None
    except errors.HfHubHTTPError as e:
        raise RunError(f"cannot download '{spec}' from the Hugging Face Hub: {str(e).splitlines()[0]}") from None
    except OSError as e:  # a full disk, a cache directory that cannot be written
        raise RunError(f"cannot download '{spec}' into {where}: {e}") from None
    return Path(path)


def _patterns(repo_id: str, revision: str | None, offline: bool) -> list[str]:
    """The files to fetch: configs, tokenizer files, and safetensors weights (the pickle only when
    the repository has none). Offline, the cache's snapshot is taken as it is."""
    base = CONFIG_FILES + TOKENIZER_FILES + SAFETENSORS_FILES
    if offline:
        return base + PICKLE_FILES
    from huggingface_hub import HfApi

    try:
        files = HfApi().list_repo_files(repo_id, revision=revision)
    except Exception:  # HTTP or connection errors: snapshot_download meets the same one and says which
        return base + PICKLE_FILES
    has_safetensors = any(f.endswith(".safetensors") and "/" not in f for f in files)
    return base if has_safetensors else base + PICKLE_FILES
