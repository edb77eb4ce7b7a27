"""Matplotlib figures written as PNG: confusion matrices, training curves, loss curves."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_confusion(cm: list[list[int]], classes: list[str], path: str | Path, title: str = "") -> Path:
    """A confusion matrix, rows = true class, columns = predicted, with counts in the cells."""
    k = len(classes)
    fig, ax = plt.subplots(figsize=(1.2 + 0.7 * k, 1.0 + 0.7 * k), dpi=100)
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(k), classes, rotation=45, ha="right")
    ax.set_yticks(range(k), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    top = max(max(r) for r in cm) or 1
    for i in range(k):
        for j in range(k):
            ax.text(j, i, cm[i][j], ha="center", va="center", color="white" if cm[i][j] > top / 2 else "black")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def plot_curves(history: list[dict], path: str | Path) -> Path:
    """Training and validation loss (and validation accuracy, if present) per epoch."""
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    epochs = [h["epoch"] for h in history]
    ax.plot(epochs, [h["train_loss"] for h in history], label="train loss")
    ax.plot(epochs, [h["val_loss"] for h in history], label="validation loss")
    if history and "val_accuracy" in history[0]:
        ax2 = ax.twinx()
        ax2.plot(epochs, [h["val_accuracy"] for h in history], color="green", label="validation accuracy")
        ax2.set_ylim(0, 1)
        ax2.set_ylabel("accuracy")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def plot_loss(steps: list[int], losses: list[float], path: str | Path, title: str = "loss", smooth: int = 50) -> Path:
    """A loss curve with a moving average over `smooth` points."""
    import numpy as np

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax.plot(steps, losses, alpha=0.3, label="loss")
    if len(losses) > smooth:
        avg = np.convolve(losses, np.ones(smooth) / smooth, mode="valid")
        ax.plot(steps[smooth - 1:], avg, label=f"moving average ({smooth})")
    ax.set_xlabel("step")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def plot_selection(history: list[dict], weights: dict[str, float], chosen: int, path: str | Path) -> Path:
    """Checkpoint selection: each chosen metric and their weighted score per validated step, the kept step marked."""
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    steps = [h["step"] for h in history]
    for metric in weights:
        ax.plot(steps, [h["validation"][metric] for h in history], marker="o", label=metric)
    if len(weights) > 1:
        ax.plot(steps, [h["score"] for h in history], marker="s", color="black", label="weighted score")
    ax.axvline(chosen, color="grey", linestyle="--", label=f"kept: step {chosen}")
    ax.set_xlabel("step")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def plot_attention(image, tokens: list[str], maps, path: str | Path) -> Path:
    """The image and one heat map per token, side by side."""
    import numpy as np

    n = len(tokens) + 1
    fig, axes = plt.subplots(1, n, figsize=(1.6 * n, 1.9), dpi=100)
    axes[0].imshow(image)
    axes[0].set_title("image", fontsize=8)
    for ax, tok, m in zip(axes[1:], tokens, maps):
        ax.imshow(np.asarray(image.convert("L").resize((m.shape[1], m.shape[0]))), cmap="gray", alpha=0.5)
        ax.imshow(m.numpy(), cmap="jet", alpha=0.6)
        ax.set_title(tok, fontsize=8)
    for ax in axes:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)
