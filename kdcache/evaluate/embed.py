"""Whole-utterance speaker embeddings."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import torch
from torch import nn

from kdcache.data.audio import read_audio
from kdcache.data.corpus import Corpus
from kdcache.data.features import FeatureConfig, compute_fbank
from kdcache.progress import progress_bar


@torch.inference_mode()
def extract_embeddings(
    model: nn.Module,
    corpus: Corpus,
    features: FeatureConfig,
    device: torch.device | str = "cpu",
    ids: Sequence[str] | None = None,
    batch_size: int = 32,
    show_progress: bool = True,
) -> tuple[list[str], torch.Tensor]:
    """Embed whole utterances (no crop), as WeSpeaker's extraction does.

    Utterances of equal length are batched together (same result as one at a time, fewer calls).
    Returns ``(ids, embeddings [N, D] float32 on CPU)`` in the order of ``ids`` (default: corpus order).
    """
    model.eval()
    ids = list(ids) if ids is not None else corpus.ids
    by_length: dict[int, list[int]] = defaultdict(list)
    for position, utt_id in enumerate(ids):
        by_length[corpus.by_id(utt_id).num_samples].append(position)
    out: list[torch.Tensor | None] = [None] * len(ids)
    bar = progress_bar(total=len(ids), desc="embeddings", unit="utt", disable=not show_progress, mininterval=1.0)
    for positions in by_length.values():
        for begin in range(0, len(positions), batch_size):
            chunk = positions[begin:begin + batch_size]
            feats = torch.stack(
                [compute_fbank(read_audio(corpus.by_id(ids[p]).path), features) for p in chunk]
            ).to(device)
            emb = model(feats).float().cpu()
            for p, e in zip(chunk, emb):
                out[p] = e
            bar.update(len(chunk))
    bar.close()
    return ids, torch.stack(out) if out else torch.empty(0)


def speaker_means(ids: Sequence[str], embeddings: torch.Tensor, corpus: Corpus) -> torch.Tensor:
    """Per-speaker mean of L2-normalised embeddings [S, D] (an AS-norm cohort)."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, utt_id in enumerate(ids):
        groups[corpus.by_id(utt_id).speaker].append(i)
    normed = torch.nn.functional.normalize(embeddings, dim=1)
    return torch.stack([normed[idx].mean(0) for _, idx in sorted(groups.items())])
