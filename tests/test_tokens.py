from hypothesis import given
from hypothesis import strategies as st

from playlist_gen import tokens


@given(st.lists(st.tuples(st.integers(0, 255), st.integers(0, 255)), max_size=30),
       st.sampled_from(tokens.SCHEMES))
def test_encode_decode_round_trip(tuples, scheme):
    text = tokens.encode(tuples, scheme)
    assert tokens.decode(text, 2, scheme) == tuples
    assert tokens.decode(text.split(), 2, scheme) == tuples


def test_level_tokens_differ_per_level():
    assert tokens.encode([(12, 7)]) == "<a_12> <b_7>"
    assert tokens.encode([(12, 7)], "shared") == "<id_12> <id_7>"
    assert len(set(tokens.vocabulary([4, 4]))) == 8
    assert len(set(tokens.vocabulary([4, 4], "shared"))) == 4


def test_decode_drops_broken_tuples():
    # a stray level-2 token, a wrong-level restart and a dangling level-1 code
    assert tokens.decode("<b_1> <a_2> <b_3> <a_4> <a_5> <b_6> <a_7>", 2) == [(2, 3), (5, 6)]
    assert tokens.decode("hello <a_1> </s> <b_2>", 2) == [(1, 2)]
