import warnings

import pytest
import torch
from PIL import Image

from conceptlab.concepts.formats import load_embedding
from conceptlab.errors import InputError
from conceptlab.models.tiny import build_pipeline
from conceptlab.training.loop import TrainConfig, Trainer
from conceptlab.training.textual_inversion import ConceptConfig, TextualInversion, TextualInversionConfig, parse_concept


def make(concept_dirs, steps=4, **train):
    pipe = build_pipeline("tiny")
    cfg = TextualInversionConfig(
        concepts=[ConceptConfig("<broc>", str(concept_dirs / "broccoli"), init="broccoli", vectors=2),
                  ConceptConfig("<emo>", str(concept_dirs / "emoji"), init="emoji")],
        train=TrainConfig(**{"steps": steps, "batch_size": 2, "lr": 5e-2, **train}),
    )
    return pipe, cfg, TextualInversion(pipe, cfg)


def test_other_embedding_rows_stay_bit_identical_under_adamw_weight_decay(concept_dirs, tmp_path):
    pipe, cfg, method = make(concept_dirs, steps=5, weight_decay=0.5)
    weight = pipe.text_encoder.get_input_embeddings().weight
    before = weight.detach().clone()
    Trainer(method, cfg.train, tmp_path).train()
    new = set(method.splice.ids.tolist())
    others = [i for i in range(weight.shape[0]) if i not in new]
    assert torch.equal(weight[others], before[others])
    assert not torch.equal(weight[sorted(new)], before[sorted(new)])  # the learned rows did move
    assert all(not p.requires_grad for p in pipe.text_encoder.parameters())


def test_resume_is_bit_identical_to_an_uninterrupted_run(concept_dirs, tmp_path):
    _, cfg, straight = make(concept_dirs, steps=6)
    Trainer(straight, cfg.train, tmp_path / "a").train()
    _, cfg, first = make(concept_dirs, steps=3)
    Trainer(first, cfg.train, tmp_path / "b").train()
    _, cfg, second = make(concept_dirs, steps=6)
    result = Trainer(second, cfg.train, tmp_path / "b").train(resume=True)
    assert result.steps == 6 and len(result.losses) == 6
    assert torch.equal(straight.splice.vectors, second.splice.vectors)


def test_diffusers_loader_gives_the_same_prompt_embeddings(concept_dirs, tmp_path):
    pipe, cfg, method = make(concept_dirs, steps=2)
    Trainer(method, cfg.train, tmp_path).train()
    method.splice.remove()
    prompt = "a sticker of a <broc> next to a <emo>"
    ours = pipe.encode_prompt(prompt, "cpu", 1, False)[0]
    fresh = build_pipeline("tiny")
    fresh.load_textual_inversion(str(tmp_path / "broc" / "learned_embeds.safetensors"))
    fresh.load_textual_inversion(str(tmp_path / "emo" / "learned_embeds.safetensors"))
    theirs = fresh.encode_prompt(prompt, "cpu", 1, False)[0]
    assert torch.allclose(ours, theirs, atol=1e-6)
    assert load_embedding(tmp_path / "broc" / "broc.npy").vectors.shape == (2, 32)
    meta = load_embedding(tmp_path / "broc" / "learned_embeds.safetensors").meta
    assert meta["steps"] == 2 and meta["init"] == "broccoli" and "final_loss" in meta and "conceptlab_version" in meta


def test_batches_are_balanced_across_concepts(concept_dirs):
    _, _, method = make(concept_dirs)
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        _, texts = method.batch(4, g)
        assert sum("<broc>" in t for t in texts) == 2 and sum("<emo>" in t for t in texts) == 2
        assert all("<broc>_1" in t for t in texts if "<broc>" in t)  # multi-vector prompts are expanded


def test_init_from_a_saved_embedding_continues_from_it(concept_dirs, tmp_path):
    pipe, cfg, method = make(concept_dirs, steps=2)
    Trainer(method, cfg.train, tmp_path).train()
    saved = load_embedding(tmp_path / "broc" / "broc.a1111.pt")
    pipe2 = build_pipeline("tiny")
    cfg2 = TextualInversionConfig(concepts=[ConceptConfig("<broc2>", str(concept_dirs / "broccoli"),
                                                          init=str(tmp_path / "broc" / "broc.a1111.pt"))])
    m2 = TextualInversion(pipe2, cfg2)
    assert torch.equal(m2.splice.vectors.detach(), saved.vectors)


@pytest.mark.parametrize("concept,match", [
    (lambda d: ConceptConfig("<x>", str(d / "missing")), "does not exist"),
    (lambda d: ConceptConfig("<x>", str(d / "broccoli"), vectors=0), "vectors=0: is out of range"),
    (lambda d: ConceptConfig("happy", str(d / "broccoli")), "already in the tokenizer"),
    (lambda d: ConceptConfig("<x>", str(d / "broccoli"), template="object-ish"), "neither"),
])
def test_bad_concepts(concept_dirs, concept, match):
    with pytest.raises(InputError, match=match):
        TextualInversion(build_pipeline("tiny"), TextualInversionConfig(concepts=[concept(concept_dirs)]))


def test_same_token_twice_and_template_without_braces(concept_dirs, tmp_path):
    c = ConceptConfig("<x>", str(concept_dirs / "broccoli"))
    with pytest.raises(InputError, match="two concepts"):
        TextualInversion(build_pipeline("tiny"), TextualInversionConfig(concepts=[c, c]))
    t = tmp_path / "templates.txt"
    t.write_text("a photo of it\n")
    with pytest.raises(InputError, match="without"):
        TextualInversion(build_pipeline("tiny"), TextualInversionConfig(
            concepts=[ConceptConfig("<x>", str(concept_dirs / "broccoli"), template=str(t))]))


def test_odd_files_are_skipped_and_odd_images_converted(tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    Image.new("RGBA", (40, 40), (255, 0, 0, 128)).save(d / "a.png")
    Image.new("L", (16, 16), 90).save(d / "small.png")
    Image.new("CMYK", (40, 40)).save(d / "c.jpg")
    (d / "notes.txt").write_text("not an image")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        m = TextualInversion(build_pipeline("tiny"), TextualInversionConfig(concepts=[ConceptConfig("<x>", str(d))]))
    messages = " ".join(str(w.message) for w in caught)
    assert "notes.txt" in messages and "upscaling" in messages
    assert len(m.latents[0]) == 3 * 2  # three images, each also flipped
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="holds no images"):
        TextualInversion(build_pipeline("tiny"), TextualInversionConfig(concepts=[ConceptConfig("<y>", str(empty))]))
    (empty / "broken.png").write_bytes(b"\x89PNG not really")  # named like an image, unreadable
    with pytest.raises(InputError, match="no readable images"):
        TextualInversion(build_pipeline("tiny"), TextualInversionConfig(concepts=[ConceptConfig("<y>", str(empty))]))


def test_parse_concept():
    c = parse_concept("<b>=data/b,init=broccoli,vectors=3,template=style")
    assert (c.token, c.folder, c.init, c.vectors, c.template) == ("<b>", "data/b", "broccoli", 3, "style")
    with pytest.raises(InputError, match="--concept"):
        parse_concept("data/b")
    with pytest.raises(InputError, match="unknown option"):
        parse_concept("<b>=d,colour=red")


def test_a_model_without_a_clip_text_encoder_is_refused():
    class NoClip:  # e.g. a transformer-only family conceptlab has no adapter for yet
        text_encoder = None

    with pytest.raises(InputError, match="CLIP text encoder"):
        TextualInversion(NoClip(), TextualInversionConfig())


def test_captions_from_metadata_put_the_token_in_each_images_own_caption(concept_dirs):
    import json

    rows = [json.loads(x) for x in (concept_dirs / "broccoli" / "metadata.jsonl").read_text().splitlines()]
    pipe = build_pipeline("tiny")
    cfg = TextualInversionConfig(concepts=[ConceptConfig("<broc>", str(concept_dirs / "broccoli"), init="broccoli",
                                                         captions="broccoli")], flip=True)
    method = TextualInversion(pipe, cfg)
    expected = {r["text"].replace("broccoli", "<broc>") for r in rows}
    assert set(method.captions[0]) == expected and all("<broc>" in t for t in expected)
    _, texts = method.batch(16, torch.Generator().manual_seed(0))
    seen = {pipe.tokenizer.convert_tokens_to_string(pipe.tokenizer.tokenize(t)) for t in texts}
    want = {pipe.tokenizer.convert_tokens_to_string(pipe.tokenizer.tokenize(pipe.maybe_convert_prompt(t, pipe.tokenizer)))
            for t in expected}
    assert seen <= want and len(seen) > 1  # every caption is one of the images' own, and several appear


def test_captions_from_txt_files_and_their_errors(tmp_path):
    folder = tmp_path / "c"
    folder.mkdir()
    for i, text in enumerate(["a photo of a tuki toy", "a tuki toy on a beach"]):
        Image.new("RGB", (32, 32), (i * 100, 0, 0)).save(folder / f"{i}.png")
        (folder / f"{i}.txt").write_text(text)
    pipe = build_pipeline("tiny")
    concept = ConceptConfig("<t>", str(folder), init="toy", captions="tuki")
    method = TextualInversion(pipe, TextualInversionConfig(concepts=[concept]))
    assert method.captions[0] == ["a photo of a <t> toy", "a <t> toy on a beach"]
    assert len(method.latents[0]) == 4  # the .txt files are captions, not unreadable images
    one = lambda word: TextualInversionConfig(concepts=[ConceptConfig("<t>", str(folder), captions=word)])  # noqa: E731
    with pytest.raises(InputError, match="does not contain 'moxo'"):
        TextualInversion(build_pipeline("tiny"), one("moxo"))
    (folder / "1.txt").unlink()
    with pytest.raises(InputError, match=r"1\.png.*has no caption"):
        TextualInversion(build_pipeline("tiny"), one("tuki"))
    assert parse_concept("<t>=d,captions=tuki").captions == "tuki"
