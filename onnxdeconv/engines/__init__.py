"""Engines: where the dataset-wide analyses run.

An engine streams a list of image files through a model and drives the mergeable states of
:mod:`onnxdeconv.analysis` (decoding, batching, checkpoints, resuming, shards). ``local`` runs on
this machine; ``ray`` (:mod:`onnxdeconv.engines.ray`) drives the same states from the workers of
a Ray cluster and merges them. Ray is imported only when that engine runs.
"""

from __future__ import annotations

from onnxdeconv.engines.choice import ENGINES, EngineName, dataset_images, engine_named, features
from onnxdeconv.engines.local import (
    LOCAL,
    Engine,
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
    "ENGINES",
    "LOCAL",
    "Engine",
    "EngineName",
    "FeaturesPage",
    "FeaturesResult",
    "ImageLoader",
    "dataset_images",
    "default_batch",
    "default_workers",
    "engine_named",
    "features",
    "file_meta",
    "folder_images",
    "merge_states",
    "mine_features",
    "model_digest",
    "preprocessing_of",
    "run_meta",
    "stream_features",
]
