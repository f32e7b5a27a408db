"""Example tests of Document and Text: the behaviour a user relies on."""

from __future__ import annotations

import threading

import pytest
from pycrdt import Doc, Map

from crdtsync._encoding import packb, unpackb
from crdtsync.errors import CorruptRecord
from crdtsync.testing.specs.documents import strict_equal
from crdtsync.types import decode_any
from crdtsync.types.documents import Document, Text, yjs_client_id

# Actor pairs ordered by Yjs client id (checked below): the second one wins conflicts.
LOW, HIGH = "alice", "bob"


def test_actor_order_used_by_these_tests():
    assert yjs_client_id(LOW) < yjs_client_id(HIGH)


def apply(state, *deltas):
    for d in deltas:
        state = state.join(d)
    return state


def doc_with(*writes, actor="w"):
    s = Document()
    for path, value in writes:
        s = s.join(s.set(path, value, actor=actor))
    return s


# -- Document: values ------------------------------------------------------------------


def test_nested_set_get_and_dotted_paths():
    s = doc_with(("model.lr", 0.01), (("model", "layers"), 3), ("flags", {"dark": True}))
    assert s.value() == {"model": {"lr": 0.01, "layers": 3}, "flags": {"dark": True}}
    assert s.get("model.layers") == 3
    assert s.get(("flags", "dark")) is True
    assert s.get("model.missing", "dflt") == "dflt"
    assert s.get("model.lr.deeper") is None


def test_tuple_paths_allow_dots_and_empty_keys():
    s = doc_with((("a.b", ""), 1))
    assert s.value() == {"a.b": {"": 1}}


@pytest.mark.parametrize(
    "value",
    [0, 1, -7, 2**53 + 1, 2**63 - 1, -(2**63), 2**64 - 1, 1.0, -0.0, 0.1, 1e300, True, False, None,
     "", "naïve 😀", [1, 1.0, True, None, "s", [2]], [{"a": 1}], {"n": {"i": 1, "f": 1.0}}],
)
def test_values_round_trip_with_their_exact_types(value):
    s = doc_with(("k", value))
    for state in (s, Document.decode(s.encode()), Document().join(s)):
        got = state.value()["k"]
        assert strict_equal(got, value), got  # 1 stays 1, 1.0 stays 1.0, True stays True


def test_value_is_a_fresh_copy():
    s = doc_with(("a", {"b": [1]}))
    v = s.value()
    v["a"]["b"].append(2)
    v["x"] = 1
    assert s.value() == {"a": {"b": [1]}}


def test_set_replaces_the_subtree():
    s = doc_with(("a", {"x": 1, "y": {"z": 2}}))
    s = s.join(s.set("a", {"w": 3}, actor="w"))
    assert s.value() == {"a": {"w": 3}}
    s = s.join(s.set("a", 5, actor="w"))
    assert s.value() == {"a": 5}


def test_set_through_a_leaf_turns_it_into_a_map():
    s = doc_with(("a", 5), ("a.b.c", 1))
    assert s.value() == {"a": {"b": {"c": 1}}}


def test_empty_dict_is_an_empty_map():
    s = doc_with(("a", {}))
    assert s.value() == {"a": {}}
    s = s.join(s.set("a.b", 1, actor="w"))
    assert s.value() == {"a": {"b": 1}}


def test_delete_removes_the_subtree_and_keeps_the_parent():
    s = doc_with(("a", {"b": {"c": 1}, "d": 2}))
    s = s.join(s.delete("a.b", actor="w"))
    assert s.value() == {"a": {"d": 2}}
    s = s.join(s.delete("a", actor="w"))
    assert s.value() == {}


def test_delete_of_a_missing_path_is_an_empty_delta():
    s = doc_with(("a", 1))
    assert s.delete("b", actor="w") == Document()
    assert s.delete("a.b", actor="w") == Document()  # below a leaf
    assert s.join(s.delete("b", actor="w")) is s


def test_delta_holds_just_the_change():
    s = Document()
    for i in range(200):
        s = s.join(s.set(("keys", f"k{i}"), i, actor="w"))
    delta = s.set("keys.k7", -1, actor="w")
    assert len(delta.encode()) < 150 < len(s.encode())
    assert s.join(delta).get("keys.k7") == -1


# -- Document: conflicts between replicas --------------------------------------------------


def test_concurrent_writes_to_different_paths_all_survive():
    base = doc_with(("model", {"lr": 0.1}))
    d1 = base.set("model.lr", 0.2, actor=LOW)
    d2 = base.set("model.layers", 4, actor=HIGH)
    d3 = base.set("flags.x", True, actor="carol")
    want = {"model": {"lr": 0.2, "layers": 4}, "flags": {"x": True}}
    assert apply(base, d1, d2, d3).value() == want
    assert apply(base, d3, d2, d1).value() == want


def test_concurrent_writes_under_a_new_intermediate_map_all_survive():
    # Nested Yjs maps created concurrently would replace each other; the flat layout does not.
    d1 = Document().set("new.a", 1, actor=LOW)
    d2 = Document().set("new.b.c", 2, actor=HIGH)
    assert apply(Document(), d1, d2).value() == {"new": {"a": 1, "b": {"c": 2}}}


@pytest.mark.parametrize("base_has_key", [False, True])
def test_concurrent_writes_to_one_key_are_won_by_the_higher_client_id(base_has_key):
    base = doc_with(("k", "old")) if base_has_key else Document()
    high = base.set("k", "from-high", actor=HIGH)
    low = base.set("k", "from-low", actor=LOW)  # issued later: time does not matter
    assert apply(base, high, low).value() == {"k": "from-high"}
    assert apply(base, low, high).value() == {"k": "from-high"}


def test_same_key_conflict_between_a_map_and_a_leaf():
    base = Document()
    as_map = base.set("k", {"x": 1}, actor=LOW)
    as_leaf = base.set("k", 7, actor=HIGH)
    assert apply(base, as_map, as_leaf).value() == {"k": 7}
    as_map = base.set("k", {"x": 1}, actor=HIGH)
    as_leaf = base.set("k", 7, actor=LOW)
    assert apply(base, as_leaf, as_map).value() == {"k": {"x": 1}}


def test_concurrent_dict_writes_to_one_key_merge_key_by_key():
    # A dict is a map node plus one write per key, so two of them merge; keys both wrote
    # go to the higher client id.
    base = doc_with(("model", {"lr": 0.1, "old": True}))
    low = base.set("model", {"lr": 0.2, "opt": "adam"}, actor=LOW)
    high = base.set("model", {"lr": 0.3}, actor=HIGH)
    want = {"model": {"lr": 0.3, "opt": "adam"}}
    assert apply(base, low, high).value() == want == apply(base, high, low).value()


def test_a_write_beats_a_concurrent_delete_of_the_same_key():
    base = doc_with(("k", 1))
    for writer, deleter in ((LOW, HIGH), (HIGH, LOW)):
        w = base.set("k", 2, actor=writer)
        d = base.delete("k", actor=deleter)
        assert apply(base, w, d).value() == {"k": 2}
        assert apply(base, d, w).value() == {"k": 2}


def test_a_delete_hides_concurrent_writes_below_it_for_good():
    base = doc_with(("cfg", {"a": 1}))
    below = base.set("cfg.b", 2, actor=HIGH)
    gone = base.delete("cfg", actor=LOW)
    s = apply(base, below, gone)
    assert s.value() == {}
    # recreating the map does not resurrect the hidden write
    s = s.join(s.set("cfg.c", 3, actor=LOW))
    assert s.value() == {"cfg": {"c": 3}}


def test_a_leaf_written_over_a_map_hides_concurrent_writes_inside_it():
    base = doc_with(("cfg", {"a": 1}))
    inside = base.set("cfg.b", 2, actor=HIGH)
    leaf = base.set("cfg", "off", actor=LOW)
    assert apply(base, inside, leaf).value() == {"cfg": "off"}


def test_replicas_converge_whatever_the_join_order():
    base = doc_with(("a", {"x": 1}))
    deltas = [
        base.set("a.y", [1, 2], actor="r1"),
        base.set("a", 3, actor="r2"),
        base.delete("a.x", actor="r3"),
        base.set("b", {"c": None}, actor="r4"),
    ]
    states = [apply(base, *deltas), apply(base, *reversed(deltas)), apply(base, deltas[2], deltas[0], deltas[3], deltas[1])]
    assert states[0] == states[1] == states[2]
    assert states[0].encode() == states[1].encode() == states[2].encode()


def test_join_is_pure():
    a = doc_with(("a", 1), actor=LOW)
    b = doc_with(("b", 2), actor=HIGH)
    before = (a.encode(), b.encode())
    ab = a.join(b)
    assert (a.encode(), b.encode()) == before
    assert ab.value() == {"a": 1, "b": 2}


# -- out-of-order deltas ----------------------------------------------------------------------


def test_deltas_that_arrive_early_wait_and_then_apply():
    w = Document()
    deltas = []
    for path, value in (("a", 1), ("a", 2), ("b", {"c": 3}), ("a", None)):
        d = w.set(path, value, actor="w")
        deltas.append(d)
        w = w.join(d)
    s = Document()
    for d in reversed(deltas[1:]):
        s = s.join(d)
        assert s.has_pending and s.value() == {}
    back = Document.decode(s.encode())  # pending updates survive encoding
    assert back == s and back.has_pending
    s = back.join(deltas[0])
    assert not s.has_pending
    assert s == w and s.value() == {"a": None, "b": {"c": 3}}


def test_minimized_overwrite_of_an_entry_whose_creation_arrives_last():
    # Minimized from the order-independence law: yrs integrates structs past a clock gap
    # and then failed to integrate a later overwrite of them, depending on arrival order.
    r2 = Document()
    d0 = r2.set(("b", "c"), [-2, 2.5], actor="r2")
    r2 = r2.join(d0)
    d1 = r2.set(("b", "b"), {}, actor="r2")
    r2 = r2.join(d1)
    r0 = apply(Document(), d0, d1)
    d4 = r2.delete("b", actor="r2")
    d5 = r0.set(("b", "c"), [-2, 2.5], actor="r0")
    in_order = apply(Document(), d0, d1, d4, d5)
    assert apply(Document(), d1, d4, d5, d0) == in_order
    assert not in_order.has_pending


def test_minimized_block_splits_do_not_change_the_encoding():
    # Minimized from the join laws: the same updates applied in a different order used to
    # encode to different bytes (block splits), breaking ``a.join(b).join(b) == a.join(b)``.
    r0, r1 = Document(), Document()
    d = r0.set("a", None, actor="r0")
    r0, r1 = r0.join(d), r1.join(d)
    r1 = r1.join(r1.set("a", None, actor="r1"))
    r0 = r0.join(r0.set("a", None, actor="r0"))
    r0 = r0.join(r0.set("a", None, actor="r0"))
    ab = r0.join(r1)
    assert ab.join(r1) == ab and ab.join(r0) == ab and r1.join(r0) == ab


def test_writing_on_a_state_missing_the_writers_own_updates_is_refused():
    w = Document()
    first = w.set("a", 1, actor="w")
    second = w.join(first).set("b", 2, actor="w")
    stale = Document().join(second)  # w's second update, pending without the first
    with pytest.raises(ValueError, match="pending"):
        stale.set("c", 3, actor="w")
    assert stale.set("c", 3, actor="other").join(stale).get("c") == 3


# -- argument validation --------------------------------------------------------------------


@pytest.mark.parametrize(
    "path, exc",
    [("", ValueError), ("a..b", ValueError), (".a", ValueError), ((), ValueError),
     (("a", 1), TypeError), (["a"], TypeError), (None, TypeError), (("a",) * 33, ValueError),
     ("\ud800", ValueError)],
)
def test_bad_paths_are_rejected(path, exc):
    with pytest.raises(exc):
        Document().set(path, 1, actor="w")
    with pytest.raises(exc):
        Document().delete(path, actor="w")


@pytest.mark.parametrize(
    "value, exc",
    [(float("nan"), ValueError), (float("inf"), ValueError), (2**64, ValueError),
     (-(2**63) - 1, ValueError), (b"raw", TypeError), ({1: "a"}, TypeError), ({1, 2}, TypeError),
     (object(), TypeError), ([[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[0]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]], ValueError)],
)
def test_bad_values_are_rejected(value, exc):
    with pytest.raises(exc):
        Document().set("k", value, actor="w")


@pytest.mark.parametrize("actor", ["", None, 7])
def test_actor_is_required(actor):
    with pytest.raises(TypeError, match="actor"):
        Document().set("k", 1, actor=actor)
    with pytest.raises(TypeError, match="actor"):
        Text().insert(0, "x", actor=actor)


def test_client_ids_are_stable_and_in_the_yjs_safe_range():
    ids = {yjs_client_id(f"replica-{i}") for i in range(2000)}
    assert len(ids) == 2000
    assert all(1 <= i <= 2**53 - 1 for i in ids)
    assert yjs_client_id("edge-1") == yjs_client_id("edge-1")


# -- encoding and untrusted input -------------------------------------------------------------


def test_encoding_is_deterministic_and_round_trips():
    s = doc_with(("a", {"b": 1}), ("c", [1.5]))
    blob = s.encode()
    assert Document.decode(blob) == s
    assert decode_any(blob) == s
    assert Document.decode(blob).encode() == blob
    assert hash(Document.decode(blob)) == hash(s)


def _with_payload(state, integrated, pending=()):
    env = unpackb(state.encode())
    env[2] = [integrated, list(pending)]
    return packb(env)


def _foreign(fill):
    d = Doc()
    fill(d)
    return d.get_update()


def test_foreign_layouts_are_corrupt_records():
    nested = _foreign(lambda d: d.get("doc", type=Map).__setitem__('["a"]', Map({"x": 1})))
    plain_int = _foreign(lambda d: d.get("doc", type=Map).__setitem__('["a"]', 1))
    bad_key = _foreign(lambda d: d.get("doc", type=Map).__setitem__("a", b"\x01\x01"))
    other_root = _foreign(lambda d: d.get("other", type=Map).__setitem__('["a"]', b"\x01\x01"))
    for update in (nested, plain_int, bad_key, other_root, b"\x01\x02\x03", b""):
        with pytest.raises(CorruptRecord):
            Document.from_update(update)
        with pytest.raises(CorruptRecord):
            Document.decode(_with_payload(Document(), update))
    text_update = Text().insert(0, "x", actor="w").yjs_updates()[0]
    with pytest.raises(CorruptRecord):
        Document.from_update(text_update)


def test_non_canonical_payloads_are_corrupt_records():
    w = Document()
    d1 = w.set("a", 1, actor="w")
    d2 = w.join(d1).set("b", 2, actor="w")
    state = w.join(d1).join(d2)
    with pytest.raises(CorruptRecord, match="already integrable"):
        Document.decode(_with_payload(state, state.yjs_updates()[0], [d2.yjs_updates()[1]]))
    with pytest.raises(CorruptRecord, match="self-contained"):
        Document.decode(_with_payload(state, d2.yjs_updates()[1]))
    with pytest.raises(CorruptRecord, match="sorted"):
        Document.decode(_with_payload(state, b"\x00\x00", [b"b", b"a"]))


def test_yjs_interop():
    s = doc_with(("model.lr", 0.5))
    d = Doc()
    for u in s.yjs_updates():
        d.apply_update(u)
    assert set(d.get("doc", type=Map).keys()) == {'["model"]', '["model","lr"]'}
    assert Document.from_update(d.get_update()) == s


def test_threads_share_a_state_safely():
    base = doc_with(*((f"k{i}", i) for i in range(50)))
    results: list[object] = []
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for _ in range(20):
                delta = base.set(f"k{n}", -n, actor=f"t{n}")
                results.append((n, base.join(delta).get(f"k{n}"), base.value() == {f"k{i}": i for i in range(50)}))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(set(results)) == [(n, -n, True) for n in range(8)]


# -- Text ----------------------------------------------------------------------------------


def edits(state, *ops, actor="w"):
    for name, *args in ops:
        state = state.join(getattr(state, name)(*args, actor=actor))
    return state


def test_sequential_edits_give_the_expected_string():
    s = edits(Text(), ("insert", 0, "hello"), ("insert", 5, " world"), ("delete", 0, 1),
              ("insert", 0, "H"), ("delete", 5, 6), ("insert", 5, "!"))
    assert s.value() == "Hello!"
    assert len(s) == 6


def test_indices_are_code_points_even_around_multibyte_characters():
    # pycrdt counts UTF-8 bytes; an offset inside a character would corrupt the text.
    s = edits(Text(), ("insert", 0, "a😀é"), ("insert", 2, "X"), ("insert", 4, "Y"), ("delete", 1, 1))
    assert s.value() == "aXéY"
    assert Text().join(s).value() == "aXéY"


def test_insert_past_the_end_appends_and_delete_past_the_end_truncates():
    s = edits(Text(), ("insert", 0, "abc"), ("insert", 99, "d"), ("delete", 2, 99))
    assert s.value() == "ab"
    assert s.delete(5, 3, actor="w") == Text()
    assert s.delete(0, 0, actor="w") == Text()
    assert s.insert(1, "", actor="w") == Text()


def test_concurrent_inserts_all_survive_and_converge():
    base = edits(Text(), ("insert", 0, "ac"))
    low = base.insert(1, "L", actor=LOW)
    high = base.insert(1, "H", actor=HIGH)
    tail = base.insert(2, "!", actor="carol")
    s1, s2 = apply(base, low, high, tail), apply(base, tail, high, low)
    assert s1 == s2
    assert s1.value() == "aLHc!"  # same place: the lower client id first


def test_concurrent_deletes_of_one_character_delete_it_once():
    base = edits(Text(), ("insert", 0, "abcd"))
    d1 = base.delete(1, 2, actor=LOW)
    d2 = base.delete(2, 2, actor=HIGH)
    assert apply(base, d1, d2).value() == "a"
    assert apply(base, d2, d1).value() == "a"


def test_an_insert_inside_a_concurrently_deleted_range_survives():
    base = edits(Text(), ("insert", 0, "abcd"))
    gone = base.delete(0, 4, actor=LOW)
    ins = base.insert(2, "X", actor=HIGH)
    assert apply(base, gone, ins).value() == "X"


def test_text_deltas_may_arrive_out_of_order():
    w = Text()
    deltas = []
    for name, *args in (("insert", 0, "abc"), ("delete", 1, 1), ("insert", 2, "😀")):
        d = getattr(w, name)(*args, actor="w")
        deltas.append(d)
        w = w.join(d)
    s = apply(Text(), *reversed(deltas))
    assert s == w and s.value() == "ac😀"


@pytest.mark.parametrize(
    "call, exc",
    [(lambda t: t.insert(-1, "x", actor="w"), ValueError), (lambda t: t.insert(True, "x", actor="w"), TypeError),
     (lambda t: t.insert(0, 5, actor="w"), TypeError), (lambda t: t.insert(0, "\ud800", actor="w"), ValueError),
     (lambda t: t.delete(0, -1, actor="w"), ValueError), (lambda t: t.delete(1.0, 1, actor="w"), TypeError)],
)
def test_bad_text_arguments_are_rejected(call, exc):
    with pytest.raises(exc):
        call(edits(Text(), ("insert", 0, "abc")))


def test_text_rejects_foreign_content():
    doc_update = Document().set("a", 1, actor="w").yjs_updates()[0]
    with pytest.raises(CorruptRecord):
        Text.from_update(doc_update)
    with pytest.raises(CorruptRecord):
        Text.decode(_with_payload(Text(), doc_update))
