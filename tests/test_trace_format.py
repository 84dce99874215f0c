"""The trace engine: format v1 validation errors name file, step and field (exit 2)."""

import json

import pytest

from vfiospec.conformance.replay import main as replay_main
from vfiospec.conformance.trace import TraceError, load_trace, parse_trace

GOOD = {
    "vfiospec": 1,
    "name": "t",
    "steps": [
        {"call": "open", "path": "/dev/vfio/vfio", "as": "container"},
        {"call": "ioctl", "fd": "container", "cmd": "VFIO_GET_API_VERSION", "expect": {"ret": 0}},
    ],
}


def bad(mut):
    doc = json.loads(json.dumps(GOOD))
    mut(doc)
    with pytest.raises(TraceError) as e:
        parse_trace(doc, "x.json")
    return e.value


def test_good_trace_parses():
    t = parse_trace(GOOD, "x.json")
    assert t.name == "t" and len(t.steps) == 2


def test_unknown_call_names_step_and_field():
    e = bad(lambda d: d["steps"].append({"call": "ioctll", "fd": "container"}))
    assert e.step == 2 and e.field == "call" and "ioctll" in e.message


def test_unknown_ioctl_names_step():
    e = bad(lambda d: d["steps"].append({"call": "ioctl", "fd": "container", "cmd": "VFIO_IOMMU_MAP_DMAX"}))
    assert e.step == 2 and e.field == "cmd" and "VFIO_IOMMU_MAP_DMAX" in e.message


def test_unknown_struct_field():
    e = bad(lambda d: d["steps"].append({"call": "ioctl", "fd": "container", "cmd": "VFIO_IOMMU_MAP_DMA",
                                         "arg": {"iova": 0, "sise": 4096}}))
    assert e.step == 2 and e.field == "arg.sise" and "vfio_iommu_type1_dma_map" in e.message


def test_unknown_top_level_key():
    e = bad(lambda d: d.update(stepz=[]))
    assert e.step is None and e.field == "stepz"


def test_wrong_type():
    e = bad(lambda d: d["steps"][1].update(fd=3))
    assert e.step == 1 and e.field == "fd"


def test_undefined_fd_name():
    e = bad(lambda d: d["steps"].append({"call": "close", "fd": "group"}))
    assert e.step == 2 and e.field == "fd" and "not open" in e.message


def test_undefined_saved_value():
    e = bad(lambda d: d["steps"].append({"call": "ioctl", "fd": "container", "cmd": "IOMMU_DESTROY",
                                         "arg": {"id": "$ioas"}}))
    assert e.step == 2 and e.field == "arg.id" and "$ioas" in e.message


def test_undefined_buffer():
    e = bad(lambda d: d["steps"].append({"call": "ioctl", "fd": "container", "cmd": "VFIO_IOMMU_MAP_DMA",
                                         "arg": {"vaddr": "buf+0x1000"}}))
    assert e.step == 2 and e.field == "arg.vaddr" and "buf" in e.message


def test_unknown_flag_and_errno():
    e = bad(lambda d: d["steps"].append({"call": "ioctl", "fd": "container", "cmd": "VFIO_IOMMU_MAP_DMA",
                                         "arg": {"flags": ["VFIO_DMA_MAP_FLAG_RAED"]}}))
    assert e.field == "arg.flags[0]" and "VFIO_DMA_MAP_FLAG_READ" in e.message
    e = bad(lambda d: d["steps"][1].update(expect={"errno": "EINVALID"}))
    assert e.step == 1 and e.field == "expect.errno"


def test_unknown_placeholder():
    e = bad(lambda d: d["steps"].append({"call": "open", "path": "/dev/vfio/{g7}", "as": "g"}))
    assert e.step == 2 and e.field == "path" and "g7" in e.message


def test_bad_json_is_exit_2_with_one_line(tmp_path, capsys):
    p = tmp_path / "broken.json"
    p.write_text('{"vfiospec": 1, "name": "x", "steps": [}')
    assert replay_main([str(p)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "broken.json" in err[0] and "line 1" in err[0]


def test_malformed_step_is_exit_2(tmp_path, capsys):
    doc = json.loads(json.dumps(GOOD))
    doc["steps"].append({"call": "ioctl", "fd": "container", "cmd": "NOPE"})
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(doc))
    assert replay_main([str(p)]) == 2
    err = capsys.readouterr().err
    assert "bad.json: step 2: field 'cmd'" in err


def test_conditional_expectation_by_kernel(tmp_path):
    doc = json.loads(json.dumps(GOOD))
    doc["platform"] = {"kernel": "6.18"}
    doc["steps"][1]["expect"] = [{"kernel": "<6.18", "ret": 1}, {"ret": 0}]
    p = tmp_path / "c.json"
    p.write_text(json.dumps(doc))
    assert replay_main([str(p), "-q"]) == 0
    doc["platform"] = {"kernel": "6.12"}
    p.write_text(json.dumps(doc))
    assert replay_main([str(p), "-q"]) == 1


def test_junit_and_json_reports(tmp_path):
    p = tmp_path / "g.json"
    p.write_text(json.dumps(GOOD))
    assert replay_main([str(p), "--junit", str(tmp_path / "j.xml"), "--json", str(tmp_path / "r.json"), "-q"]) == 0
    xml = (tmp_path / "j.xml").read_text()
    assert 'tests="1"' in xml and 'name="t"' in xml
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["traces"][0]["verdict"] == "PASS"
