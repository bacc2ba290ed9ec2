"""The language model's own word-level tokenizers, saved in Hugging Face format.

Built from the training questions and answers only: words never seen in training map to [UNK], which
is exactly what makes reworded test questions hard for a router trained on templates. Composed families
get r2t2's own specials; image-text families get the chat specials their architecture's processor and
chat template use.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
from transformers import PreTrainedTokenizerFast

PAD, UNK, BOS, EOS, SEP, ANS = "[PAD]", "[UNK]", "[BOS]", "[EOS]", "[SEP]", "[ANS]"
SPECIALS = (PAD, UNK, BOS, EOS, SEP, ANS)

# The chat specials of Qwen's vision-language models, under their published names.
END_OF_TEXT, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
VISION_START, VISION_END, IMAGE_PAD, VIDEO_PAD = "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"
CHAT_SPECIALS = (END_OF_TEXT, UNK, IM_START, IM_END, VISION_START, VISION_END, IMAGE_PAD, VIDEO_PAD)
CHAT_ROLES = ("system", "user", "assistant")  # words of every chat turn, in the vocabulary whatever the data
# One user turn holding images and text, then the assistant's turn; what Qwen's own templates produce for it.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] in ('image', 'image_url') %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _word_level(texts: Iterable[str], specials: Sequence[str]) -> Tokenizer:
    """Word-level vocabulary over lower-cased words and punctuation of `texts`, specials first."""
    normalizer = normalizers.Lowercase()
    pre = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    words: set[str] = set()
    for text in texts:
        words.update(w for w, _ in pre.pre_tokenize_str(normalizer.normalize_str(text)))
    vocab = {tok: i for i, tok in enumerate(specials)}
    for word in sorted(words):
        vocab.setdefault(word, len(vocab))
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    core.normalizer = normalizer
    core.pre_tokenizer = pre
    return core


def build_tokenizer(texts: Iterable[str]) -> PreTrainedTokenizerFast:
    """The composed families' tokenizer: r2t2's specials, then the words of `texts`."""
    return PreTrainedTokenizerFast(
        tokenizer_object=_word_level(texts, SPECIALS), pad_token=PAD, unk_token=UNK, bos_token=BOS, eos_token=EOS,
        sep_token=SEP, additional_special_tokens=[ANS], clean_up_tokenization_spaces=False,
    )


def build_chat_tokenizer(texts: Iterable[str]) -> PreTrainedTokenizerFast:
    """A chat tokenizer for Qwen-style image-text models: their specials, the words of `texts`, and a chat
    template. A turn ends with <|im_end|>, which is also end-of-sequence; the special tokens are matched
    whole before words are split, so a processor's run of <|image_pad|> stays one token each."""
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=_word_level([*texts, " ".join(CHAT_ROLES)], CHAT_SPECIALS), pad_token=END_OF_TEXT,
        unk_token=UNK, eos_token=IM_END,
        additional_special_tokens=[IM_START, VISION_START, VISION_END, IMAGE_PAD, VIDEO_PAD],
        clean_up_tokenization_spaces=False,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer
