"""Engines: where the dataset-wide analyses run.

An engine streams a list of image files through a model and drives the mergeable states of
:mod:`onnxdeconv.analysis` (decoding, batching, checkpoints, resuming, shards). ``local`` runs on
this machine; a distributed engine drives the same states from several workers and merges them.
"""

from __future__ import annotations

from onnxdeconv.engines.local import (
    FeaturesPage,
    FeaturesResult,
    ImageLoader,
    default_batch,
    default_workers,
    file_meta,
    folder_images,
    merge_states,
    mine_features,
    model_digest,
    preprocessing_of,
    run_meta,
    stream_features,
)

__all__ = [
    "FeaturesPage",
    "FeaturesResult",
    "ImageLoader",
    "default_batch",
    "default_workers",
    "file_meta",
    "folder_images",
    "merge_states",
    "mine_features",
    "model_digest",
    "preprocessing_of",
    "run_meta",
    "stream_features",
]
