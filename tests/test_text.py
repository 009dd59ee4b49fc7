import numpy as np

from gamerec.text import UNKNOWN, build_vocabulary, encode_csr, tokenize


def test_tokenize_strips_html_css_and_entities():
    text = '<p>Fast <b>RACING</b> &amp; drift!</p><br/>.a-box{color:#fff} 4K'
    assert tokenize(text) == ["fast", "racing", "drift", "4k"]


def test_vocabulary_min_count_max_size_and_stable_ties():
    docs = [["b", "a", "c"], ["a", "b"], ["a", "d"]]
    assert build_vocabulary(docs, min_count=1, max_size=10) == [UNKNOWN, "a", "b", "c", "d"]
    assert build_vocabulary(docs, min_count=2, max_size=10) == [UNKNOWN, "a", "b"]
    assert build_vocabulary(docs, min_count=1, max_size=1) == [UNKNOWN, "a"]


def test_encode_csr_drops_unknown_and_caps_length():
    vocab = [UNKNOWN, "a", "b"]
    indptr, indices = encode_csr([[], ["a", "zz", "b", "a"], ["zz"]], vocab, max_tokens=2)
    assert indptr.tolist() == [0, 0, 2, 2]
    assert indices.tolist() == [1, 2]
    assert indices.dtype == np.int32 and indptr.dtype == np.int64
