"""Image I/O: npy / npz / tiff / vti, voxel order and spacing, errors."""
import numpy as np
import pytest

from fva.io import load_image, save_npz, save_vti
from fva.types import VoxelImage


@pytest.fixture
def img():
    ph = np.zeros((4, 5, 6), np.uint8)
    ph[1, 2, 3] = 1  # a known voxel: z=1, y=2, x=3
    ph[3, 4, 5] = 2
    return VoxelImage(ph, voxel_m=(3e-6, 2e-6, 1e-6))


def test_npy_and_npz(tmp_path, img):
    np.save(tmp_path / "a.npy", img.phase)
    a = load_image(tmp_path / "a.npy", voxel_m=(3e-6, 2e-6, 1e-6))
    assert np.array_equal(a.phase, img.phase) and a.voxel_m == (3e-6, 2e-6, 1e-6)
    np.savez(tmp_path / "one.npz", seg=img.phase)
    assert np.array_equal(load_image(tmp_path / "one.npz", voxel_m=1e-6).phase, img.phase)
    np.savez(tmp_path / "two.npz", a=img.phase, b=img.phase * 0)
    with pytest.raises(ValueError, match="several arrays"):
        load_image(tmp_path / "two.npz", voxel_m=1e-6)
    assert load_image(tmp_path / "two.npz", key="b", voxel_m=1e-6, phase=0).phase.sum() == 0
    with pytest.raises(ValueError, match=r"labels present: 0\)"):  # all pore: nothing conducts
        load_image(tmp_path / "two.npz", key="b", voxel_m=1e-6)
    save_npz(tmp_path / "s.npz", img)
    b = load_image(tmp_path / "s.npz", key="phase")
    assert np.array_equal(b.phase, img.phase) and b.voxel_m == img.voxel_m


def test_tiff_stack(tmp_path, img):
    import tifffile

    tifffile.imwrite(tmp_path / "s.tif", img.phase, photometric="minisblack")
    a = load_image(tmp_path / "s.tif", voxel_m=2e-6, phase=2)
    assert a.phase[1, 2, 3] == 1 and a.conducting_phase == 2 and a.solid.sum() == 1


def test_vti_round_trip_known_voxel(tmp_path, img):
    import pyvista as pv

    pot = np.arange(img.phase.size, dtype=float).reshape(img.shape)
    cur = np.zeros(img.shape + (3,))
    cur[1, 2, 3] = (7.0, 8.0, 9.0)  # (jz, jy, jx)
    p = save_vti(tmp_path / "f.vti", img, potential=pot, current=cur, extra={"flag": img.phase * 2})
    g = pv.read(str(p))
    assert tuple(g.dimensions) == (7, 6, 5)  # points (nx+1, ny+1, nz+1)
    assert np.allclose(g.spacing, (1e-6, 2e-6, 3e-6))
    # the voxel z=1, y=2, x=3 has its centre at (3.5 dx, 2.5 dy, 1.5 dz)
    cid = g.find_containing_cell((3.5e-6, 2.5 * 2e-6, 1.5 * 3e-6))
    assert g.cell_data["phase"][cid] == 1
    assert g.cell_data["potential"][cid] == pot[1, 2, 3]
    assert np.allclose(g.cell_data["current_density"][cid], (9.0, 8.0, 7.0))  # (jx, jy, jz)
    back = load_image(p)
    assert np.array_equal(back.phase, img.phase) and np.allclose(back.voxel_m, img.voxel_m)
    assert not list(tmp_path.glob(".*tmp*"))  # atomic write left no temp file


def test_load_errors(tmp_path, img):
    with pytest.raises(ValueError, match="not found"):
        load_image(tmp_path / "missing.npy", voxel_m=1e-6)
    (tmp_path / "x.raw").write_bytes(b"0")
    with pytest.raises(ValueError, match="extension"):
        load_image(tmp_path / "x.raw", voxel_m=1e-6)
    np.save(tmp_path / "g.npy", np.random.default_rng(0).random((3, 3, 3)))
    with pytest.raises(ValueError, match="grey-scale"):
        load_image(tmp_path / "g.npy", voxel_m=1e-6)
    np.save(tmp_path / "a.npy", img.phase)
    for bad in (0.0, -1e-6, (1e-6, 0.0, 1e-6)):
        with pytest.raises(ValueError, match="positive"):
            load_image(tmp_path / "a.npy", voxel_m=bad)
    with pytest.raises(ValueError, match="voxel size"):
        load_image(tmp_path / "a.npy")
    np.save(tmp_path / "f.npy", img.phase.astype(float))  # integral floats are accepted
    assert load_image(tmp_path / "f.npy", voxel_m=1e-6).phase.dtype.kind in "iu"
