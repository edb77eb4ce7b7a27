"""Placeholder tokens: adding them to a pipeline, initialising their vectors, splicing trainable vectors in."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from conceptlab.concepts.formats import Embedding
from conceptlab.errors import InputError


@dataclass(frozen=True)
class PlaceholderToken:
    """A new word such as '<broccoli>', backed by `num_vectors` embedding rows (diffusers' naming)."""

    token: str
    num_vectors: int = 1

    def tokens(self) -> list[str]:
        return [self.token] + [f"{self.token}_{i}" for i in range(1, self.num_vectors)]


def add_placeholder(tokenizer, text_encoder, placeholder: PlaceholderToken, argument: str = "--concept") -> list[int]:
    """Adds the placeholder's tokens; returns their ids. A token already in the vocabulary is an error."""
    if placeholder.num_vectors < 1:
        raise InputError(argument, placeholder.num_vectors, "vectors must be >= 1", "Use vectors=1 (or more)")
    vocab = tokenizer.get_vocab()
    taken = [t for t in placeholder.tokens() if t in vocab or t + "</w>" in vocab]
    if taken:
        raise InputError(argument, placeholder.token, f"{taken[0]!r} is already in the tokenizer's vocabulary",
                         "Choose a new word, e.g. '<my-concept>'")
    added = tokenizer.add_tokens(placeholder.tokens())
    if added != placeholder.num_vectors:
        raise InputError(argument, placeholder.token, "could not be added as a new token", "Choose another word")
    embedding = text_encoder.get_input_embeddings()
    if len(tokenizer) > embedding.num_embeddings:
        text_encoder.resize_token_embeddings(len(tokenizer), mean_resizing=False)  # rows are set by the caller
    return tokenizer.convert_tokens_to_ids(placeholder.tokens())


def init_vectors(tokenizer, text_encoder, init: str | Embedding | None, num_vectors: int,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """(K, D) starting vectors: a word's embedding (the mean, if it splits into several tokens), a saved
    embedding, or random vectors scaled like the vocabulary when no init is given, drawn from `generator` (one
    generator shared by several new tokens gives each its own draw; default: seeded 0)."""
    weight = text_encoder.get_input_embeddings().weight  # (V, D)
    if isinstance(init, Embedding):
        check_dimension(init, weight.shape[1])
        if init.num_vectors != num_vectors:
            raise InputError("init", init.token, f"has {init.num_vectors} vectors, the concept asks for {num_vectors}",
                             f"Set vectors={init.num_vectors} or drop init")
        return init.vectors.clone()
    if init is None:
        g = generator or torch.Generator().manual_seed(0)  # drawn on the CPU (the same on every device), then moved
        return torch.randn(num_vectors, weight.shape[1], generator=g).to(weight.device) * weight.detach().float().std()
    ids = tokenizer(init, add_special_tokens=False).input_ids
    if not ids:
        raise InputError("init", init, "tokenizes to nothing", "Use a word such as init=broccoli")
    if len(ids) > 1:
        pieces = tokenizer.convert_ids_to_tokens(ids)
        warnings.warn(f"init word {init!r} splits into {len(ids)} tokens {pieces}; using the mean of their "
                      "embeddings", stacklevel=2)
    return weight.detach()[ids].float().mean(0, keepdim=True).repeat(num_vectors, 1)


def check_dimension(emb: Embedding, width: int, argument: str = "embedding") -> None:
    if emb.dim != width:
        raise InputError(argument, emb.token, f"has vectors of size {emb.dim} but the text encoder's are {width}",
                         "Use an embedding trained for this model family (SD 1.x: 768, SD 2.x: 1024)")


class TokenSplice(nn.Module):
    """Trainable vectors spliced into the token-embedding output at placeholder ids (a forward hook).

    The embedding matrix itself stays frozen and never reaches the optimizer, so every other row stays
    bit-identical whatever the optimizer does (diffusers' script instead trains the whole matrix and
    copies the other rows back, which weight decay and momentum defeat between the copies).
    """

    def __init__(self, embedding: nn.Embedding, token_ids: list[int], init: torch.Tensor):
        super().__init__()
        device = embedding.weight.device  # float32 whatever the encoder's dtype (trained under mixed precision)
        self.vectors = nn.Parameter(init.detach().to(device, torch.float32, copy=True))  # (K_total, D)
        self.register_buffer("ids", torch.tensor(token_ids, device=device), persistent=False)
        self.embedding = [embedding]  # a list, so the frozen matrix is not a submodule of ours
        self.handle = embedding.register_forward_hook(self._hook)

    def _hook(self, module, inputs, output):
        input_ids = inputs[0]  # (B, T)
        match = input_ids[..., None] == self.ids  # (B, T, K)
        if not match.any():
            return output
        which = match.float().argmax(-1)  # (B, T)
        return torch.where(match.any(-1, keepdim=True), self.vectors[which].to(output.dtype), output)

    @torch.no_grad()
    def write_into_embedding(self) -> None:
        """Copies the vectors into the matrix rows, so the model works without the hook."""
        weight = self.embedding[0].weight
        weight[self.ids] = self.vectors.to(weight.dtype)

    def remove(self) -> None:
        self.handle.remove()


def check_new_token(tokenizer, token: str, argument: str) -> None:
    """A learned token must be a new word: one named like a real word ('broccoli') would silently take it over."""
    vocab = tokenizer.get_vocab()
    if token in tokenizer.get_added_vocab():
        raise InputError(argument, token, "is a learned token this model already holds (given twice, or kept by the "
                         "model itself, as a `train pivotal --full-fine-tune` pipeline keeps its tokens)",
                         "Load each token once, and none the model already reads; or rename one (concepts convert --token)")
    if token in vocab or token.lower() + "</w>" in vocab or token + "</w>" in vocab:
        raise InputError(argument, token, "is already a word of the tokenizer; loading it would take that word over",
                         f"Rename it, e.g. --token '<{token.strip('<>')}>' (concepts convert --token renames a file)")


def slot_vectors(emb: Embedding, family) -> list[torch.Tensor]:
    """The embedding's vectors for each of the family's text encoders, in the family's order."""
    return [emb.vectors] + [emb.extra.get(slot.key) for slot in family.slots[1:]]


def check_fits(pipe, emb: Embedding, argument: str = "embedding") -> None:
    """An embedding must have one (K, D_i) matrix per text encoder of the pipeline, each of its width."""
    from conceptlab.models.families import family_of

    family = family_of(pipe)
    want, have = family.widths(pipe), emb.widths()
    if have != want or any(v is None for v in slot_vectors(emb, family)):
        def show(ws):
            return " + ".join(map(str, ws))
        raise InputError(argument, emb.token, f"has vectors {show(have)} wide, but this {family.name} model's text "
                         f"encoders are {show(want)} wide",
                         "Use an embedding trained for this model family (SD 1.x: 768, SD 2.x: 1024, SDXL: 768 + 1280)")


def load_concepts(pipe, embeddings: list[Embedding], argument: str = "--concepts") -> None:
    """Adds embeddings to a pipeline through diffusers' own loader (into every text encoder the family has),
    after checking widths and names."""
    from conceptlab.models.families import family_of

    family = family_of(pipe)
    seen: set[str] = set()
    for emb in embeddings:
        if emb.token in seen:
            raise InputError(argument, emb.token, "is given twice", "Pass each embedding once")
        seen.add(emb.token)
        if pipeline := emb.meta.get("full_fine_tune_pipeline"):  # `train pivotal --full-fine-tune`'s tokens
            raise InputError(argument, emb.token, f"was trained together with every weight of {pipeline}; on "
                             "another model it would lose what that fine-tune learned",
                             f"Use --model {pipeline} (it already reads the token) and drop this from {argument}")
        check_fits(pipe, emb, argument)
        for slot in family.slots:
            check_new_token(slot.parts(pipe)[0], emb.token, argument)
    for emb in embeddings:
        for slot, vectors in zip(family.slots, slot_vectors(emb, family)):
            tok, te = slot.parts(pipe)
            pipe.load_textual_inversion({emb.token: vectors.to(te.dtype)}, token=emb.token, tokenizer=tok,
                                        text_encoder=te)


def embedding_files(path: str | Path) -> list[Path]:
    """An embedding file itself, or every learned_embeds.safetensors in a folder and its subfolders."""
    path = Path(path)
    if path.is_file():
        return [path]
    if path.is_dir():
        found = sorted(path.glob("learned_embeds.safetensors")) + sorted(path.glob("*/learned_embeds.safetensors"))
        if found:
            return found
    raise InputError("--concepts", str(path), "holds no embedding", "Pass an embedding file or a `train ti` output folder")


def load_concept_paths(pipe, paths: list[str | Path]) -> list[Embedding]:
    """Loads every embedding found under `paths` into the pipeline; returns them."""
    from conceptlab.concepts.formats import load_embedding

    embeddings = [load_embedding(f, argument="--concepts") for p in paths for f in embedding_files(p)]
    load_concepts(pipe, embeddings)
    return embeddings
