"""Shared fixtures for the serving tests."""
from __future__ import annotations

from pathlib import Path

import pytest

import r2t2  # noqa: F401  (torchvision fix before transformers)

TINY_WORDS = [f"w{i}" for i in range(60)]


@pytest.fixture(scope="session")
def tiny_mixtral_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small random Mixtral checkpoint with its own WordLevel tokenizer, in HF format.

    hidden 128, 2 heads of 64 (the CPU attention kernels need head_dim 64), 2 layers, 4 experts
    top-2. A wide initialiser keeps logits far apart, so greedy decoding is not decided by
    rounding noise between engines.
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import GenerationConfig, MixtralConfig, MixtralForCausalLM, PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(["[PAD]", "[UNK]", "</s>", *TINY_WORDS])}
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.decoder = decoders.WordPiece(prefix="##")  # joins words with single spaces
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]",
                                   eos_token="</s>")
    config = MixtralConfig(
        vocab_size=len(vocab), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, head_dim=64, num_local_experts=4,
        num_experts_per_tok=2, max_position_embeddings=512, initializer_range=0.2,
        eos_token_id=vocab["</s>"], pad_token_id=vocab["[PAD]"], bos_token_id=None, tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = MixtralForCausalLM(config).eval()
    out = tmp_path_factory.mktemp("tiny-mixtral")
    model.save_pretrained(out)
    fast.save_pretrained(out)
    GenerationConfig(eos_token_id=vocab["</s>"], pad_token_id=vocab["[PAD]"]).save_pretrained(out)
    return out
