from transformers import CLIPTokenizer

from conceptlab.models.tiny import sticker_tokenizer
from conceptlab.models.tokenizer import train_clip_tokenizer


def test_unknown_words_tokenize_without_unk():
    tok = train_clip_tokenizer(["a happy star", "a sad apple"])
    ids = tok("zyxwvq ünïcödé 日本 van gogh").input_ids
    assert tok.unk_token_id not in ids[1:-1]
    assert tok.decode(ids, skip_special_tokens=True).replace(" ", "") == "zyxwvqünïcödé日本vangogh"


def test_round_trip_through_from_pretrained(tmp_path):
    tok = sticker_tokenizer()
    tok.save_pretrained(tmp_path)
    loaded = CLIPTokenizer.from_pretrained(tmp_path)
    text = "a sticker of an angry blue cat wearing sunglasses on a beach"
    assert loaded(text).input_ids == tok(text).input_ids
    assert loaded.model_max_length == 77


def test_sticker_words_are_single_tokens():
    tok = sticker_tokenizer()
    for word in ("broccoli", "happy", "sunglasses", "beach", "painting", "monster"):
        assert len(tok.tokenize(word)) == 1, word


def test_pads_to_77_like_clip():
    tok = sticker_tokenizer()
    ids = tok("a star", padding="max_length", max_length=tok.model_max_length).input_ids
    assert len(ids) == 77 and ids[0] == tok.bos_token_id


def _vocab_in_subprocess(hash_seed: str, code: str) -> str:
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout


def test_the_sticker_tokenizer_gives_the_same_ids_in_every_process():
    """The v0 base model met other ids at inference than in training: the tokenizer was trained afresh in
    each process, and BPE training numbers tokens in hash order. Another process (another hash seed than this
    one's, which is random) must agree with this one."""
    import json
    import sys

    code = ("import json; from conceptlab.models.tokenizer import sticker_tokenizer; "
            "print(json.dumps(sticker_tokenizer().get_vocab(), sort_keys=True))")
    seed = "1" if sys.flags.hash_randomization else "2"  # differs from this process's either way
    assert json.loads(_vocab_in_subprocess(seed, code)) == sticker_tokenizer().get_vocab()


def test_the_shipped_text_encoder_has_a_row_for_every_sticker_token():
    from transformers import CLIPTextConfig

    from conceptlab.models.loading import shipped_base_model

    config = CLIPTextConfig.from_pretrained(shipped_base_model() / "text_encoder")
    assert len(sticker_tokenizer()) <= config.vocab_size
