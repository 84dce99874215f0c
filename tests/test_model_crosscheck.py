"""The z3 transition relation and the reference agree, on errno and post-state, for
a few thousand sampled (state, action) pairs (deterministic seeds).  Drift between
the two is a failure; a reference with a seeded bug is caught."""

from __future__ import annotations

from vfiospec.model import crosscheck as cc


def _run(platform, n, seed):
    checked, bad = cc.sample(n, seed=seed, platform=platform)
    assert checked == n
    assert not bad, "\n".join(str(b) for b in bad[:10])
    return dict(cc.sample.coverage)


def test_crosscheck_vtd():
    cov = _run("vtd", 1800, 1)
    ok = {a for (a, e), k in cov.items() if e == "OK"}
    for a in ("Bind", "Attach", "IoasMap", "IoasAlloc", "MapDma", "UnmapDma", "SetIommu", "SetContainer", "MdevCreate"):
        assert a in ok, (a, sorted(cov.items()))
    errs = {(a, e) for (a, e) in cov if e != "OK"}
    for pair in (("Bind", "EPERM"), ("Attach", "EINVAL"), ("MapDma", "EEXIST"), ("Destroy", "EBUSY")):
        assert pair in errs, (pair, sorted(cov.items()))


def test_crosscheck_spapr():
    cov = _run("spapr", 1200, 2)
    ok = {a for (a, e), k in cov.items() if e == "OK"}
    for a in ("RegisterMemory", "UnregisterMemory", "TceCreate", "SpaprUnmapDma", "SetIommu"):
        assert a in ok, (a, sorted(cov.items()))
    assert ("UnregisterMemory", "ENOENT") in cov


def test_crosscheck_catches_a_reference_bug(monkeypatch):
    """A reference whose UNREGISTER frees a region regardless of its mappings'
    count differs from the model on sub-range/exact unregisters: caught."""
    from vfiospec.reference.powerpc import iommu_api
    orig = iommu_api.mm_iommu_get

    def get_any(kernel, ua, entries):
        m = orig(kernel, ua, entries)
        if m is None:                       # bug: a sub-range finds the region holding it
            m = iommu_api.mm_iommu(kernel).containing(ua)
            if m is not None:
                m.used += 1
        return m
    monkeypatch.setattr(iommu_api, "mm_iommu_get", get_any)
    checked, bad = cc.sample(1200, seed=2, platform="spapr")
    assert any(b.action in ("UnregisterMemory", "RegisterMemory") for b in bad), [str(b) for b in bad[:5]]
