"""`pelletsim conductivity` as a user runs it: labelled images, tolerances, convergence, memory refusal."""
from __future__ import annotations

import json

import numpy as np
import pytest

from dem.cli import main
from fva import generators as gen


def _labelled():
    ph = np.zeros((10, 8, 8), np.uint8)
    ph[:, :, :3] = 85
    ph[:, :, 3:5] = 170
    return ph


def test_phase_on_a_label_image(tmp_path, capsys, taichi_runtime):
    f = tmp_path / "electrode.npy"
    np.save(f, _labelled())
    out = tmp_path / "o"
    assert main(["conductivity", str(f), "--voxel-size", "1e-6", "--phase", "85", "-o", str(out), "--no-vti",
                 "-q"]) == 0
    data = json.loads((out / "results.json").read_text())
    assert data["status"] == "complete"
    assert data["sigma_eff_over_bulk"] == pytest.approx(3 / 8, rel=1e-6)


def test_absent_label_names_the_labels_present(tmp_path, capsys):
    f = tmp_path / "electrode.npy"
    np.save(f, _labelled())
    assert main(["conductivity", str(f), "--voxel-size", "1e-6", "--phase", "255", "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "labels present: 0, 85, 170" in err and err.count("\n") <= 2


def test_phase_conductivity_multi_phase(tmp_path, taichi_runtime):
    f = tmp_path / "electrode.npy"
    np.save(f, _labelled())
    out = tmp_path / "o"
    assert main(["conductivity", str(f), "--voxel-size", "1e-6", "--phase-conductivity", "85=1.0",
                 "--phase-conductivity", "170=0.5", "-o", str(out), "--no-vti", "-q"]) == 0
    data = json.loads((out / "results.json").read_text())
    assert data["sigma_eff_S_per_m"] == pytest.approx((3 * 1.0 + 2 * 0.5) / 8, rel=1e-6)
    assert data["phase_conductivities_S_per_m"] == {"0": 0.0, "85": 1.0, "170": 0.5}
    assert main(["conductivity", str(f), "--voxel-size", "1e-6", "--phase-conductivity", "7=1.0",
                 "-o", str(tmp_path / "p")]) == 2


@pytest.mark.parametrize("flag,value", [("--flux-tol", "5"), ("--flux-tol", "0"), ("--rtol", "1"),
                                        ("--rtol", "-1e-3"), ("--phase-conductivity", "85"),
                                        ("--phase-conductivity", "a=1"), ("--phase-conductivity", "85=inf")])
def test_bad_tolerances_and_labels_exit_2(tmp_path, capsys, flag, value):
    f = tmp_path / "a.npy"
    np.save(f, np.ones((4, 4, 4), np.uint8))
    assert main(["conductivity", str(f), "--voxel-size", "1e-6", flag, value]) == 2
    assert flag in capsys.readouterr().err


def test_winding_channel_converges_to_the_right_value(tmp_path, taichi_runtime):
    """The false-convergence image through the CLI: many iterations, the direct solve's σ."""
    from fva.reference import solve_reference

    ph = gen.winding_channel(4, 7, 8)
    f = tmp_path / "wind.npy"
    np.save(f, ph)
    out = tmp_path / "o"
    assert main(["conductivity", str(f), "--voxel-size", "1e-6", "-o", str(out), "--no-vti", "-q"]) == 0
    data = json.loads((out / "results.json").read_text())
    _, planes = solve_reference(ph.astype(float))
    exact = planes.mean() * ph.shape[0] / (ph.shape[1] * ph.shape[2])
    e = data["analysed"][0]
    assert e["iterations"] > 0 and e["converged"] and e["residual"] <= 1e-6
    assert data["sigma_eff_S_per_m"] == pytest.approx(exact * 1.0, rel=1e-4)  # σ_bulk 10 mS/cm = 1 S/m


def test_huge_npy_is_refused_with_the_memory_it_needs(tmp_path, capsys):
    f = tmp_path / "huge.npy"
    with open(f, "wb") as fh:  # a header declaring 10^15 voxels, no data
        np.lib.format.write_array_header_1_0(fh, {"descr": "|u1", "fortran_order": False,
                                                  "shape": (100000, 100000, 100000)})
    assert main(["conductivity", str(f), "--voxel-size", "1e-6", "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "GiB" in err and "available" in err and "huge.npy" in err


def test_vti_fields_default_only_for_moderate_images(tmp_path, capsys, monkeypatch, taichi_runtime):
    import dem.cli_image as cli     # cmd_conductivity reads the threshold where it is defined

    f = tmp_path / "a.npy"
    np.save(f, np.ones((6, 5, 4), np.uint8))
    monkeypatch.setattr(cli, "VTI_DEFAULT_MAX_VOXELS", 100)
    out = tmp_path / "big"
    assert main(["conductivity", str(f), "--voxel-size", "1e-6", "-o", str(out), "-q"]) == 0
    assert not list(out.glob("*.vti")) and "--vti" in capsys.readouterr().err
    out2 = tmp_path / "forced"
    assert main(["conductivity", str(f), "--voxel-size", "1e-6", "-o", str(out2), "-q", "--vti"]) == 0
    assert (out2 / "fields_z.vti").is_file()


def _grains():
    """Three grains stacked along z (labels 4, 9, 2), a pore slab of label 0 at the side."""
    g = np.full((12, 4, 5), 4, np.int32)
    g[4:8] = 9
    g[8:] = 2
    g[:, :, 4] = 0
    return g


def test_grain_label_image_with_interface_resistance(tmp_path, taichi_runtime):
    """--grain-labels: every grain conducts; R_i adds per unit area in series at each of the two grain
    boundaries: σ_eff = (4/5)·L/(L/σ + 2 R_i) (the pore column carries nothing)."""
    f = tmp_path / "grains.npy"
    np.save(f, _grains())
    out = tmp_path / "o"
    R, sig, L = 2e-6, 1.0, 12e-6
    assert main(["conductivity", str(f), "--voxel-size", "1e-6", "--grain-labels", "--interface-resistance",
                 str(R), "--rtol", "1e-10", "-o", str(out), "--no-vti", "-q"]) == 0
    data = json.loads((out / "results.json").read_text())
    assert data["interface_resistance_ohm_m2"] == R and data["grain_labels_pore"] == 0
    assert data["sigma_eff_S_per_m"] == pytest.approx(0.8 * L / (L / sig + 2 * R), rel=1e-6)
    assert data["analysed"][0]["interface_faces"] == 2 * 4 * 4


@pytest.mark.parametrize("extra,fragment", [
    (["--interface-resistance", "-1e-6", "--grain-labels"], "--interface-resistance"),
    (["--interface-resistance", "inf", "--grain-labels"], "--interface-resistance"),
    (["--interface-resistance", "1e-6"], "--interface-resistance needs --grain-labels"),
    (["--grain-labels", "--phase", "4"], "--grain-labels"),
    (["--grain-labels", "--pore-label", "7"], "grain labels must be >= 0"),
])
def test_interface_resistance_bad_input_exit_2(tmp_path, capsys, extra, fragment):
    f = tmp_path / "grains.npy"
    g = _grains()
    if "7" in extra:
        g[0, 0, 0] = -3
        g[1, 1, 1] = 7
    np.save(f, g)
    assert main(["conductivity", str(f), "--voxel-size", "1e-6", *extra, "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert fragment in err and err.count("pelletsim: error") == 1
