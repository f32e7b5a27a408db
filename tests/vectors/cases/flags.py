from crdtsync.clock import make_hlc
from crdtsync.types.flags import DisableWinsFlag, EnableWinsFlag, Rule, VariantFlag

T0 = make_hlc(1_700_000_000_000)


def _conflict(cls, default=False):
    base = cls(default=default)
    cloud = base.join(base.disable(actor="cloud"))
    store = base.join(base.enable(actor="store-17"))
    return cloud.join(store)


def _settled(cls):
    s = _conflict(cls)
    s = s.join(s.enable(actor="cloud"))
    return s.join(s.disable(actor="edge-1"))


def _variant_configured():
    f = VariantFlag()
    return f.join(f.configure(
        [("treatment", 500), ("control", 0)],
        [
            Rule("country", "in", ("DE", "FR"), "control"),
            Rule("age", "ge", 18, "treatment"),
            Rule("score", "lt", 0.5, "control"),
            Rule("beta", "exists", True, "treatment"),
        ],
        "control",
        "checkout",
        actor="cloud",
        ts=T0,
    ))


def _variant_killed_conflict():
    f = _variant_configured()
    killed = f.join(f.kill(actor="cloud", ts=T0 + 1))
    revived = f.join(f.revive(actor="store-17", ts=T0 + 1))
    return killed.join(revived)


def _variant_reconfigured():
    f = _variant_configured()
    f = f.join(f.configure([("treatment", 2_500), ("control", 0)], actor="edge-1", ts=T0 + 2))
    return f


CASES = [
    ("ewflag/empty", EnableWinsFlag),
    ("ewflag/default-on", lambda: EnableWinsFlag(default=True)),
    ("ewflag/conflict", lambda: _conflict(EnableWinsFlag)),
    ("ewflag/settled", lambda: _settled(EnableWinsFlag)),
    ("dwflag/empty", DisableWinsFlag),
    ("dwflag/kill-switch-conflict", lambda: _conflict(DisableWinsFlag, default=True)),
    ("dwflag/settled", lambda: _settled(DisableWinsFlag)),
    ("variant/empty", VariantFlag),
    ("variant/configured", _variant_configured),
    ("variant/killed-conflict", _variant_killed_conflict),
    ("variant/reconfigured", _variant_reconfigured),
]
