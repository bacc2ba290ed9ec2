"""The language model's own word-level tokenizer, saved in Hugging Face format.

Built from the training questions and answers only: words never seen in training map to [UNK], which
is exactly what makes reworded test questions hard for a router trained on templates.
"""
from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
from transformers import PreTrainedTokenizerFast

PAD, UNK, BOS, EOS, SEP, ANS = "[PAD]", "[UNK]", "[BOS]", "[EOS]", "[SEP]", "[ANS]"
SPECIALS = (PAD, UNK, BOS, EOS, SEP, ANS)


def build_tokenizer(texts: Iterable[str]) -> PreTrainedTokenizerFast:
    """Word-level vocabulary over lower-cased words and punctuation of `texts`, specials first."""
    normalizer = normalizers.Lowercase()
    pre = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    words: set[str] = set()
    for text in texts:
        words.update(w for w, _ in pre.pre_tokenize_str(normalizer.normalize_str(text)))
    vocab = {tok: i for i, tok in enumerate(SPECIALS)}
    for word in sorted(words):
        vocab.setdefault(word, len(vocab))
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    core.normalizer = normalizer
    core.pre_tokenizer = pre
    return PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token=PAD, unk_token=UNK, bos_token=BOS, eos_token=EOS,
        sep_token=SEP, additional_special_tokens=[ANS], clean_up_tokenization_spaces=False,
    )
