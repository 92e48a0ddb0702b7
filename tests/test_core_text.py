"""The key-value protocol, colour names, the vocabulary and short quotes of user data."""

import hashlib

import pytest
import webcolors

from facecorpus import colors, textproto, vocab
from facecorpus.excerpt import QUOTE_CHARS, quote, shorten


@pytest.mark.parametrize("dataset, labels, text", [
    ("cacd", {"age": 25}, "cacd age: 25"),
    ("fairface", {"age": "10-19", "gender": "female", "race": "east asian"},
     "fairface age: 10-19; gender: female; race: east asian"),
    ("celeba", {"gender": "male", "bald": True, "oval face": False}, "celeba gender: male; bald: true; oval face: false"),
    ("fs2k", {"hair color": "rosy brown"}, "fs2k hair color: rosy brown"),
])
def test_protocol_both_ways(dataset, labels, text):
    assert textproto.to_text(dataset, labels) == text
    assert textproto.from_text(text) == (dataset, labels)


@pytest.mark.parametrize("labels, message", [
    ({"Age": 3}, "lower-case words"),
    ({"age": "a;b"}, "';' or ':'"),
    ({"age": "12"}, "read back as"),
    ({"age": 2.5}, "use bool, int or str"),
    ({}, "at least one label"),
])
def test_protocol_refuses_what_cannot_round_trip(labels, message):
    with pytest.raises(textproto.ProtocolError, match=message):
        textproto.to_text("x", labels)


def test_protocol_rejects_malformed_text():
    with pytest.raises(textproto.ProtocolError, match="malformed pair"):
        textproto.from_text("cacd age 25")


def test_attribute_names():
    assert textproto.attribute_name("Wearing_Hat") == "wearing hat"
    assert textproto.attribute_name("5_o_Clock_Shadow") == "5 o clock shadow"


def test_every_css3_name_splits_into_words_and_maps_back_to_itself():
    names = webcolors.names(webcolors.CSS3)
    assert len(names) == 147
    for name in names:
        words = colors.split_color_name(name)
        assert words.replace(" ", "") == name
        rgb = webcolors.name_to_rgb(name, spec=webcolors.CSS3)
        # the nearest name of a palette colour is itself, or its alphabetically first twin (gray/grey)
        nearest = colors.nearest_color(tuple(rgb)).replace(" ", "")
        assert webcolors.name_to_rgb(nearest) == rgb


@pytest.mark.parametrize("rgb, words", [
    ((188, 143, 142), "rosy brown"), ((188.2, 142.6, 142.9), "rosy brown"),
    ((250, 250, 210), "light goldenrod yellow"), ((128, 128, 128), "gray"), ((0, 255, 255), "aqua"),
])
def test_nearest_color(rgb, words):
    assert colors.nearest_color(rgb) == words


def test_nearest_color_rejects_out_of_range():
    with pytest.raises(ValueError, match="0..255"):
        colors.nearest_color((300, 0, 0))


def test_vocab_is_pinned_bert_uncased():
    data = open(vocab.vocab_path(), "rb").read()
    assert hashlib.sha256(data).hexdigest() == vocab.VOCAB_SHA256
    assert data.decode().splitlines()[:1] == ["[PAD]"] and len(data.decode().splitlines()) == 30522
    assert vocab.encode_text("to image") == [2000, 3746]
    assert vocab.encode_text("to caption") == [2000, 14408, 3258]
    assert vocab.encode_text("fs2k eyes color: rosy brown") == [1042, 2015, 2475, 2243, 2159, 3609, 1024, 26851, 2829]
    assert vocab.vocab_size(1024) == 31546 and vocab.image_ids([0, 1023]) == [30522, 31545]
    assert vocab.decode_text(vocab.encode_text("A Smiling woman") + [30600]) == "a smiling woman"


def test_quotes_of_user_data_are_short():
    assert quote("abc") == "'abc'" and quote([1, 2]) == "[1, 2]"
    long = quote("x" * 1_000_000)
    assert long == f"{'x' * QUOTE_CHARS!r}... (1,000,000 characters)"
    assert shorten("y" * 10_000).endswith("... (9,500 more characters)") and len(shorten("y" * 10_000)) < 600
