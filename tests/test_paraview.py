"""Particle frames → .vtp per frame + .pvd collection, read back with pyvista and an XML parser."""
import xml.etree.ElementTree as ET

import numpy as np
import pytest

pv = pytest.importorskip("pyvista")

from dem.paraview import write_particle_frames, write_pvd  # noqa: E402
from dem.types import ParticleFrame  # noqa: E402


def _frame(k, n=7, stress=True):
    rng = np.random.default_rng(k)
    return ParticleFrame(
        time_s=1.5e-4 * k, step=1000 * k,
        centers_m=rng.random((n, 3)) * 1e-4,
        radii_m=(1.0 + np.arange(n)) * 1e-6 * (k + 1),
        velocities_m_per_s=np.column_stack([np.arange(n), -np.arange(n), np.full(n, k)]).astype(float),
        forces_N=np.column_stack([np.full(n, 1e-3), np.zeros(n), np.arange(n) * 1e-4]),
        contact_count=np.arange(n) % 5,
        stress_Pa=(np.arange(n) * 1e6 + k) if stress else None,
        box_m=np.array([2.1e-4, 2.1e-4, 1.7e-3]))


def test_two_frames_round_trip(tmp_path):
    frames = [_frame(0), _frame(1)]
    pvd = write_particle_frames(tmp_path, frames)
    assert pvd == tmp_path / "particles.pvd" and pvd.exists()
    root = ET.parse(pvd).getroot()
    assert root.tag == "VTKFile" and root.get("type") == "Collection"
    ds = root.find("Collection").findall("DataSet")
    assert [float(d.get("timestep")) for d in ds] == [0.0, 1.5e-4]
    for d, fr in zip(ds, frames):
        f = tmp_path / d.get("file")
        assert f.parent == tmp_path / "particles" and f.suffix == ".vtp" and f.exists()
        m = pv.read(f)
        assert m.n_points == 7
        for name in ("radius", "diameter", "velocity", "force", "contact_count", "stress"):
            assert name in m.point_data, name
        # a known point: particle 3
        i = 3
        assert np.allclose(m.points[i], fr.centers_m[i])
        assert m.point_data["radius"][i] == pytest.approx(fr.radii_m[i])
        assert m.point_data["diameter"][i] == pytest.approx(2 * fr.radii_m[i])
        assert np.allclose(m.point_data["velocity"][i], fr.velocities_m_per_s[i])
        assert m.point_data["velocity"].shape == (7, 3) and m.point_data["force"].shape == (7, 3)
        assert np.allclose(m.point_data["force"][i], fr.forces_N[i])
        assert m.point_data["contact_count"][i] == fr.contact_count[i]
        assert m.point_data["stress"][i] == pytest.approx(fr.stress_Pa[i])
        assert m.field_data["time_s"][0] == pytest.approx(fr.time_s)
        assert np.allclose(m.field_data["box_m"], fr.box_m)
    # ParaView-style reader sees a time series
    r = pv.get_reader(str(pvd))
    assert np.allclose(r.time_values, [0.0, 1.5e-4])
    # no temporary files left behind
    assert not [p for p in tmp_path.rglob("*") if ".tmp" in p.name]


def test_stress_optional_and_name(tmp_path):
    pvd = write_particle_frames(tmp_path, [_frame(0, stress=False)], name="loose")
    m = pv.read(tmp_path / "loose" / "loose_000000.vtp")
    assert "stress" not in m.point_data and "radius" in m.point_data
    assert pvd.name == "loose.pvd"


def test_write_pvd_escapes_and_orders(tmp_path):
    p = write_pvd(tmp_path / "c.pvd", [(0.0, "a/x&y.vtp"), (2.5, "a/z.vtp")])
    ds = ET.parse(p).getroot().find("Collection").findall("DataSet")
    assert [d.get("file") for d in ds] == ["a/x&y.vtp", "a/z.vtp"]


def test_bad_frames(tmp_path):
    with pytest.raises(ValueError, match="empty"):
        write_particle_frames(tmp_path, [])
    fr = _frame(0)
    bad = ParticleFrame(time_s=0.0, step=0, centers_m=fr.centers_m, radii_m=fr.radii_m[:3],
                        velocities_m_per_s=fr.velocities_m_per_s, forces_N=fr.forces_N,
                        contact_count=fr.contact_count)
    with pytest.raises(ValueError, match="radii_m"):
        write_particle_frames(tmp_path, [bad])
