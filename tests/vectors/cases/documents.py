"""Golden vectors for Document ("doc") and Text ("text").

The bytes include yrs's update encoding, so a pycrdt/yrs upgrade that changes how an
update is encoded shows up here first.
"""

from crdtsync.types.documents import Document, Text


def _doc_nested():
    s = Document()
    for path, value in (("model.lr", 0.01), (("model", "layers"), 3), ("flags", {"dark": True, "tags": ["a", 1]})):
        s = s.join(s.set(path, value, actor="cloud"))
    return s


def _doc_overwrite_delete():
    s = _doc_nested()
    s = s.join(s.set("model.lr", 0.02, actor="edge-1"))
    s = s.join(s.set("big", 2**63 - 1, actor="edge-1"))
    return s.join(s.delete("flags", actor="cloud"))


def _doc_concurrent():
    base = _doc_nested()
    a = base.set("model.lr", 0.5, actor="edge-1")
    b = base.set("model.lr", 0.7, actor="edge-2")
    c = base.set("model.opt", {"name": "adam"}, actor="edge-1")
    return base.join(a).join(b).join(c)


def _doc_pending():
    w = Document()
    first = w.set("a", 1, actor="edge-1")
    second = w.join(first).set("b", {"c": [None, False]}, actor="edge-1")
    return Document().join(second)  # waits for ``first``


def _text_edits():
    s = Text()
    for name, *args in (("insert", 0, "héllo wörld"), ("insert", 11, " 😀"), ("delete", 0, 1), ("insert", 0, "H")):
        s = s.join(getattr(s, name)(*args, actor="cloud"))
    return s


def _text_concurrent():
    base = _text_edits()
    a = base.insert(5, ",", actor="edge-1")
    b = base.insert(5, ";", actor="edge-2")
    c = base.delete(6, 6, actor="cloud")
    return base.join(a).join(b).join(c)


def _text_pending():
    w = Text()
    first = w.insert(0, "abc", actor="edge-1")
    second = w.join(first).delete(1, 1, actor="edge-1")
    return Text().join(second)


CASES = [
    ("doc/empty", Document),
    ("doc/nested", _doc_nested),
    ("doc/overwrite-delete", _doc_overwrite_delete),
    ("doc/concurrent", _doc_concurrent),
    ("doc/pending", _doc_pending),
    ("text/empty", Text),
    ("text/edits", _text_edits),
    ("text/concurrent", _text_concurrent),
    ("text/pending", _text_pending),
]
