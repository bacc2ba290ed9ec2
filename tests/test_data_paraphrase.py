"""The paraphrase split re-asks the test split with wording no training question uses."""

import re

import pytest

from r2t2.data import load_split, training_vocabulary
from r2t2.data.wording import FORMS, match_question, paraphrase, question_words


@pytest.fixture(scope="module")
def sets():
    return {split: load_split(split) for split in ("train", "test", "paraphrase")}


def test_every_paraphrase_has_a_word_no_training_question_uses(sets) -> None:
    vocabulary = training_vocabulary()
    assert {"what", "color", "shape", "digit", "many"} <= vocabulary
    for sample in sets["paraphrase"]:
        assert set(question_words(sample.question)) - vocabulary, sample.question


def test_no_paraphrase_equals_a_training_question(sets) -> None:
    asked = {s.question for s in sets["train"]}
    assert not asked & {s.question for s in sets["paraphrase"]}


def test_same_images_and_answers_as_test_with_content_words_kept(sets) -> None:
    assert len(sets["paraphrase"]) == len(sets["test"])
    for original, reworded in zip(sets["test"], sets["paraphrase"], strict=True):
        assert reworded.id == "paraphrase/" + original.id and reworded.split == "paraphrase"
        assert reworded.image is original.image and reworded.answer == original.answer
        assert reworded.task == original.task and reworded.question != original.question
        _, slots = match_question(original.question)
        assert all(word in question_words(reworded.question) for word in slots.values())


def test_paraphrase_is_stable_and_uses_several_wordings(sets) -> None:
    sample = sets["test"][0]
    assert paraphrase(sample.question, sample.id) == sets["paraphrase"][0].question
    assert len({s.question for s in sets["paraphrase"] if s.task == "count"}) == 3


def test_forms_match_their_own_wording_only() -> None:
    for form in FORMS:
        assert set(form.asked).isdisjoint(form.paraphrased)
        for template in form.asked:
            question = template.format(color="teal", shape="circle", other="triangle")
            assert match_question(question)[0] is form


def test_questions_are_lower_case_words_with_at_most_a_final_question_mark(sets) -> None:
    shape = re.compile(r"[a-z]+( [a-z]+)*\??")
    for split in sets.values():
        assert all(shape.fullmatch(s.question) for s in split)


def test_unknown_wording_is_rejected() -> None:
    with pytest.raises(ValueError, match="no known training wording"):
        match_question("what is the meaning of life?")


def test_paraphrase_val_wordings_are_disjoint_from_training_and_paraphrase() -> None:
    for form in FORMS:
        assert form.validation and set(form.validation).isdisjoint(form.asked)
        assert set(form.validation).isdisjoint(form.paraphrased)


def test_paraphrase_val_rewords_train_images_only_with_held_out_words(sets) -> None:
    val = load_split("paraphrase-val")
    vocabulary = training_vocabulary()
    paraphrased = {s.question for s in sets["paraphrase"]}
    assert len(val) == len(sets["train"])
    for original, reworded in zip(sets["train"], val, strict=True):
        assert reworded.id == "paraphrase-val/" + original.id and reworded.split == "paraphrase-val"
        assert reworded.image is original.image and reworded.answer == original.answer
        assert reworded.task == original.task
        assert set(question_words(reworded.question)) - vocabulary, reworded.question
        assert reworded.question not in paraphrased
    held_out = {s.image.tobytes() for s in sets["test"]} | {s.image.tobytes() for s in load_split("reference")}
    assert not {s.image.tobytes() for s in val} & held_out


def test_rephrased_wordings_share_no_template_with_the_other_families() -> None:
    for form in FORMS:
        assert form.heldout
        assert set(form.heldout).isdisjoint(set(form.asked) | set(form.paraphrased) | set(form.validation))


def test_rephrased_rewords_test_images_with_words_of_its_own(sets) -> None:
    rephrased = load_split("rephrased")
    vocabulary = training_vocabulary()
    others = {s.question for s in sets["paraphrase"]} | {s.question for s in load_split("paraphrase-val")}
    other_words = {w for q in others for w in question_words(q)} | vocabulary
    assert len(rephrased) == len(sets["test"])
    for original, reworded in zip(sets["test"], rephrased, strict=True):
        assert reworded.id == "rephrased/" + original.id and reworded.split == "rephrased"
        assert reworded.image is original.image and reworded.answer == original.answer
        assert reworded.task == original.task and reworded.question not in others
        # a word that neither training, paraphrase nor paraphrase-val asks with
        assert set(question_words(reworded.question)) - other_words, reworded.question
        _, slots = match_question(original.question)
        assert all(word in question_words(reworded.question) for word in slots.values())
