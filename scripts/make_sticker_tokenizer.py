"""Writes src/conceptlab/models/sticker_tokenizer/: a CLIP-format BPE tokenizer for sticker-world captions.

Run once; the result is a fixed file so that every process (training, export, inference) maps words to
the same ids. `--from DIR` copies the tokenizer of an existing pipeline folder instead of training one.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from transformers import CLIPTokenizer

from conceptlab.models.tiny import STICKER_TOKENIZER
from conceptlab.models.tokenizer import train_clip_tokenizer
from conceptlab.world import caption, sample_spec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--from", dest="source", type=Path, help="a pipeline folder whose tokenizer/ to copy")
    ap.add_argument("--captions", type=int, default=4000)
    args = ap.parse_args()
    if args.source:
        tok = CLIPTokenizer.from_pretrained(args.source / "tokenizer")
    else:
        texts = [caption(sample_spec(i, individual_rate=0.3), drop=0.2) for i in range(args.captions)]
        tok = train_clip_tokenizer(texts)
    tmp = STICKER_TOKENIZER.with_name(STICKER_TOKENIZER.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tok.save_pretrained(tmp)
    shutil.rmtree(STICKER_TOKENIZER, ignore_errors=True)
    tmp.rename(STICKER_TOKENIZER)
    print(f"wrote {STICKER_TOKENIZER} ({len(tok)} tokens)")


if __name__ == "__main__":
    main()
