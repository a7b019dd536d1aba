"""A tiny random-initialised SAM 3 video checkpoint in the released on-disk layout.

:func:`build_segmenter` writes what ``facebook/sam3`` holds for transformers: ``config.json``
(``model_type`` ``sam3_video``: the SAM 3 detector and the SAM 3 tracker in one model),
``model.safetensors``, and the ``Sam3VideoProcessor`` files (a SAM 3 image processor, the SAM 2
video processor and a CLIP tokenizer). :class:`~engine.annotators.segment.Sam3Segmenter` loads it
with ``from_pretrained`` exactly as it loads the real one.

Sizes: 56×56 input (4×4 patches of 14 pixels), width 128. Some sizes are not free: the tracker's
memory attention reads 64-channel memories whatever the config says, and folds object pointers
into those 64 channels only when the model is wider than that, so the width is 128.

Random weights find nothing in particular, so the detector is set to see the phrase everywhere:
its query/text projections are constant and its presence head is confident. Every query then
becomes a detection on every frame, which makes the tracker run (new objects, memories,
propagation) through the same code a real video takes.
"""

from __future__ import annotations

from pathlib import Path

#: Input side in pixels and patch size: 4×4 patches.
IMAGE_SIZE = 56
PATCH_SIZE = 14
#: Model width (see the module docstring for why not smaller).
WIDTH = 128
#: Detector queries: at most this many objects per frame.
QUERIES = 4


def _tokenizer():
    """A CLIP tokenizer with one token per byte (and per byte ending a word), no merges."""
    from tokenizers import pre_tokenizers
    from transformers import CLIPTokenizer

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for suffix in ("", "</w>"):
        for char in alphabet:
            vocab[char + suffix] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[])


def _config(vocab_size: int):
    from transformers import Sam3Config, Sam3TrackerVideoConfig, Sam3VideoConfig

    cells = IMAGE_SIZE // PATCH_SIZE
    vision = {
        "model_type": "sam3_vision_model",
        "backbone_config": {
            "model_type": "sam3_vit_model",
            "hidden_size": WIDTH,
            "intermediate_size": 2 * WIDTH,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": IMAGE_SIZE,
            "patch_size": PATCH_SIZE,
            "pretrain_image_size": IMAGE_SIZE,
            "window_size": 2,
            "global_attn_indexes": [1],
        },
        "fpn_hidden_size": WIDTH,
        "backbone_feature_sizes": [[4 * cells, 4 * cells], [2 * cells, 2 * cells], [cells, cells]],
    }
    small = {"hidden_size": WIDTH, "num_attention_heads": 2, "intermediate_size": 2 * WIDTH}
    detector = Sam3Config(
        vision_config=vision,
        text_config={
            "model_type": "clip_text_model",
            "vocab_size": vocab_size,
            "hidden_size": WIDTH,
            "intermediate_size": 2 * WIDTH,
            "projection_dim": WIDTH,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "max_position_embeddings": 32,  # the processors pad every phrase to 32 tokens
            "bos_token_id": 0,
            "eos_token_id": 1,
            "pad_token_id": 1,
        },
        geometry_encoder_config={**small, "num_layers": 1},
        detr_encoder_config={**small, "num_layers": 1},
        detr_decoder_config={**small, "num_layers": 1, "num_queries": QUERIES},
        mask_decoder_config={"hidden_size": WIDTH, "num_attention_heads": 2},
    )
    tracker = Sam3TrackerVideoConfig(
        vision_config=vision,
        image_size=IMAGE_SIZE,
        prompt_encoder_config={"hidden_size": WIDTH, "image_size": IMAGE_SIZE, "patch_size": PATCH_SIZE},
        mask_decoder_config={
            "hidden_size": WIDTH,
            "mlp_dim": 2 * WIDTH,
            "num_attention_heads": 2,
            "iou_head_hidden_dim": WIDTH,
        },
        num_maskmem=3,
        memory_attention_hidden_size=WIDTH,
        memory_attention_num_layers=1,
        memory_attention_feed_forward_hidden_size=2 * WIDTH,
        memory_encoder_hidden_size=WIDTH,
        memory_encoder_output_channels=64,  # fixed: the memory attention's keys are 64 wide
        mask_downsampler_embed_dim=WIDTH,
        memory_fuser_embed_dim=WIDTH,
        memory_fuser_intermediate_dim=2 * WIDTH,
    )
    config = Sam3VideoConfig(
        detector_config=detector,
        tracker_config=tracker,
        low_res_mask_size=4 * cells,  # the tracker's mask size: 4× the patch grid, as 288 for 1008
    )
    config.image_size = IMAGE_SIZE  # propagates the feature sizes to both halves
    return config


def build_segmenter(dir: Path, seed: int) -> None:
    """Write a tiny SAM 3 video model and its processor into ``dir`` (created)."""
    import torch
    from transformers import Sam2VideoVideoProcessor, Sam3ImageProcessor, Sam3VideoModel, Sam3VideoProcessor

    dir = Path(dir)
    dir.mkdir(parents=True, exist_ok=True)
    tokenizer = _tokenizer()
    torch.manual_seed(seed)
    model = Sam3VideoModel(_config(vocab_size=len(tokenizer))).eval()
    with torch.no_grad():
        # See everything: score = sigmoid(<text_proj(t), query_proj(q)> / sqrt(width)) ≈ 1 for
        # any phrase and query, and the presence score sigmoid(8) ≈ 1.
        scoring = model.detector_model.dot_product_scoring
        for projection in (scoring.text_proj, scoring.query_proj):
            projection.weight.zero_()
            projection.bias.fill_(1.0)
        presence = model.detector_model.detr_decoder.presence_head.layer3
        presence.weight.zero_()
        presence.bias.fill_(8.0)
    model.save_pretrained(dir)
    size = {"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    processor = Sam3VideoProcessor(
        image_processor=Sam3ImageProcessor(size=size),
        video_processor=Sam2VideoVideoProcessor(size=size),
        tokenizer=tokenizer,
    )
    processor.save_pretrained(dir)
