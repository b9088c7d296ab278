"""Class conditioning shared by the networks: a learned embedding of the class label is added to
the noise-level embedding (as in the class-conditional models of Ho et al. 2020 / Dhariwal and
Nichol 2021). A network is class-conditional when its `num_classes` > 0; its forward then takes
`class_labels` [N] (int64) and refuses to run without them (there is no "no class" label)."""
from __future__ import annotations

import torch
from torch import nn


def conditional_classes(conditional: bool, num_classes: int, model: str) -> int:
    """The number of classes a model is built with: the dataset's (a runtime argument) when the
    suite says `conditional: true`, else 0."""
    if not conditional:
        return 0
    if not num_classes or num_classes < 1:
        raise ValueError(f"model '{model}' is conditional, but the dataset has no class labels")
    return int(num_classes)


def with_class(emb: torch.Tensor, table: nn.Embedding | None, class_labels: torch.Tensor | None) -> torch.Tensor:
    """emb + table(labels) for a class-conditional network; emb itself (untouched) otherwise."""
    if table is None and class_labels is None:
        return emb
    return emb + class_embedding(table, class_labels, emb.shape[0])


def checked_labels(num_classes: int, class_labels: torch.Tensor | None, n: int,
                   model: str = "this model") -> torch.Tensor | None:
    """class_labels as int64 [n] for a network with num_classes classes (None for an unconditional
    one). Errors when labels are given to an unconditional network, or are missing, misshapen or
    out of range for a conditional one."""
    if not num_classes:
        if class_labels is not None:
            raise ValueError(f"{model} is unconditional but was given class labels")
        return None
    if class_labels is None:
        raise ValueError(f"{model} is class-conditional ({num_classes} classes) and needs class labels")
    if class_labels.shape != (n,):
        raise ValueError(f"class labels must have shape ({n},), got {tuple(class_labels.shape)}")
    labels = class_labels.long()
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"class labels must be in [0, {num_classes}), got {int(labels.min())}..{int(labels.max())}")
    return labels


def class_embedding(table: nn.Embedding | None, class_labels: torch.Tensor | None, n: int) -> torch.Tensor:
    """The class term to add to the noise-level embedding: table(labels) [n, E] (checked_labels' errors)."""
    labels = checked_labels(table.num_embeddings if table is not None else 0, class_labels, n)
    if labels is None:
        raise ValueError("this model is unconditional but was given class labels")
    return table(labels)
