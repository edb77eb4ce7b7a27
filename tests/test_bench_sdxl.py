"""The SDXL benchmark's loops on the tiny SDXL pipeline: the diffusers-style reference trains what ours trains."""

import torch

from benchmarks import bench_sdxl
from conceptlab.models.tiny import build_sdxl_pipeline


def test_reference_ti_restores_every_other_row_and_trains_its_own(tmp_path):
    from conceptlab.training.textual_inversion import ConceptConfig, TextualInversion, TextualInversionConfig
    from conceptlab.world.export import export_images

    export_images(tmp_path, 2, seed=0, size=32, only={"object": {"broccoli"}})
    pipe = build_sdxl_pipeline(shape="tiny")
    bench_sdxl.add_reference_token(pipe, "<ref>", "broccoli")
    ours = TextualInversion(pipe, TextualInversionConfig(concepts=[ConceptConfig("<bench>", str(tmp_path),
                                                                                 init="broccoli")], resolution=32))
    ref = bench_sdxl.ReferenceTI(ours, "<ref>", torch.rand(2, 3, 32, 32) * 2 - 1, lr=1e-2)
    before = [w.detach().clone() for w in ref.weights]
    ref.step(2, torch.Generator().manual_seed(0))
    for tok, w, old in zip((pipe.tokenizer, pipe.tokenizer_2), ref.weights, before):
        row = tok.convert_tokens_to_ids("<ref>")
        changed = (w != old).any(-1).nonzero().flatten().tolist()
        assert changed == [row]  # only the reference's own token moved, in both encoders
        assert not w.requires_grad  # ours and the floor do not pay for the matrix's gradient


def test_reference_token_keeps_a_larger_vocabulary():
    """The SDXL-shaped encoders hold SDXL's 49408 rows, more than the sticker tokenizer's ids: the reference's
    optimizer must see the whole matrix, as the script's does."""
    pipe = build_sdxl_pipeline(shape="tiny")
    for te in (pipe.text_encoder, pipe.text_encoder_2):
        te.resize_token_embeddings(5000, mean_resizing=False)
    bench_sdxl.add_reference_token(pipe, "<ref>", "broccoli")
    assert [te.get_input_embeddings().num_embeddings for te in (pipe.text_encoder, pipe.text_encoder_2)] == [5000] * 2


def test_tiny_run_gives_every_row_and_matching_loss_curves():
    results = bench_sdxl.run(quick=True, size=32, shape="tiny", fresh_process=False)
    names = [r.name for r in results]
    assert names == [
        "sdxl textual inversion tiny-shaped @32px: CPU s/step vs reference",
        "sdxl textual inversion tiny-shaped @32px: CPU s/step vs floor",
        "sdxl textual inversion tiny-shaped @32px: MB two steps add vs reference",
        "sdxl LoRA tiny-shaped @32px: CPU s/step vs reference",
        "sdxl LoRA tiny-shaped @32px: CPU s/step vs reference, prompt encoded once",
        "sdxl LoRA tiny-shaped @32px: CPU s/step vs floor",
        "sdxl LoRA tiny-shaped @32px: MB two steps add vs reference",
    ]
    assert all(r.ours > 0 and r.reference > 0 for r in results if r.unit == "cpu s")
    # the same random numbers in the same order: the reference and ours train the same vectors alike
    assert results[0].detail["loss_curves_max_relative_difference"] < 1e-4
