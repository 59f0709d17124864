"""A LeNet-like classifier of the MNIST-like 28x28 digits, trained in seconds (the attribution benchmark's network).

Conv 1->10 5x5, AvgPool 2, Tanh, Conv 10->20 5x5, AvgPool 2, Tanh, Linear 320->50, Tanh, Linear 50->classes: smooth
everywhere, so every Taylor coefficient exists. Trained with Adam on cross-entropy in float32 (seeded), returned in
float64 for exact expansions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from hope_engine.analysis.data import digits_28


def lenet(classes: int = 10, seed: int = 0) -> nn.Sequential:
    """The untrained network (float32, seeded initialisation)."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 10, 5), nn.AvgPool2d(2), nn.Tanh(), nn.Conv2d(10, 20, 5), nn.AvgPool2d(2),
                         nn.Tanh(), nn.Flatten(), nn.Linear(320, 50), nn.Tanh(), nn.Linear(50, classes))


@dataclass(frozen=True)
class TrainedClassifier:
    """The trained model (float64, eval mode), the data it saw, the held-out split and its accuracy there."""

    model: nn.Module
    images: torch.Tensor
    labels: torch.Tensor
    train: torch.Tensor
    test: torch.Tensor
    accuracy: float


def train_digits_cnn(epochs: int = 8, seed: int = 0, train_size: int = 1500, images=None,
                     labels=None) -> TrainedClassifier:
    """Train ``lenet`` on the 28x28 digits (or on ``images``/``labels`` given, (N, 1, 28, 28) in [0, 1]): a seeded
    random split, ``train_size`` images for training, mini-batches of 50, Adam at lr 3e-3, one CPU thread."""
    if images is None:
        images, labels = digits_28(torch.float32)
    images = images.float()
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(images), generator=gen)
    train, test = perm[:train_size], perm[train_size:]
    model = lenet(int(labels.max()) + 1, seed).train()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(epochs):
            order = train[torch.randperm(len(train), generator=gen)]
            for i in range(0, len(order), 50):
                idx = order[i:i + 50]
                opt.zero_grad()
                nn.functional.cross_entropy(model(images[idx]), labels[idx]).backward()
                opt.step()
    finally:
        torch.set_num_threads(threads)
    model = model.double().eval()
    x = images.double()
    with torch.no_grad():
        acc = float((model(x[test]).argmax(1) == labels[test]).double().mean()) if len(test) else float("nan")
    return TrainedClassifier(model, x, labels, train, test, acc)
