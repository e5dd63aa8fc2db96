"""Read and write voxel images: .npy / .npz / .tif(f) stacks / .vti, and .vti / .npz results.

Arrays are indexed ``[z, y, x]`` (slice, row, column, as tifffile reads a stack); the value
``phase`` (default 1) is the conducting phase. ParaView's ImageData is x-fastest: a [z, y, x]
array is written with ``arr.ravel(order="C")`` (= ``arr.transpose(2, 1, 0).ravel(order="F")``)
and dimensions (nx+1, ny+1, nz+1) points for nx*ny*nz cells.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from fva.atomic import atomic_path
from fva.types import VoxelImage

IMAGE_EXTENSIONS = (".npy", ".npz", ".tif", ".tiff", ".vti")


def _voxel_tuple(voxel_m):
    if voxel_m is None:
        return None
    v = (float(voxel_m),) * 3 if np.isscalar(voxel_m) else tuple(float(x) for x in voxel_m)
    if len(v) != 3:
        raise ValueError(f"voxel_m must be a scalar or (dz, dy, dx), got {voxel_m}")
    if not all(np.isfinite(x) and x > 0 for x in v):
        raise ValueError(f"voxel size must be positive and finite (metres), got {voxel_m}")
    return v


def load_image(path, *, key: str | None = None, voxel_m=None, phase: int | None = None,
               periodic=(False, False, False), grains: int | None = None) -> VoxelImage:
    """Load a binary or labelled voxel image as a :class:`VoxelImage` ([z, y, x]).

    Parameters
    ----------
    path : .npy, .npz (the only array or ``key``), .tif/.tiff stack, or .vti (cell or point data).
    key : array name inside an .npz, or the data-array name inside a .vti.
    voxel_m : voxel size in metres, scalar or (dz, dy, dx). Required unless the file carries it
        (.vti spacing, or a ``voxel_m`` array in the .npz).
    phase : value of the conducting phase (default 1).
    periodic : (px, py, pz) flags stored on the image.
    grains : the pore label of a grain label image (one label per grain): the image is then solid where it
        differs from ``grains`` and carries the grain labels (``fva.interface.grain_image``); ``phase`` unused.
    """
    p = Path(path)
    if not p.exists():
        raise ValueError(f"image file not found: {p}")
    ext = p.suffix.lower()
    if ext not in IMAGE_EXTENSIONS:
        raise ValueError(f"unknown image extension {ext!r} for {p}; expected one of {IMAGE_EXTENSIONS}")
    check_loadable(p, key)
    file_voxel = None
    if ext == ".npy":
        arr = np.load(p, allow_pickle=False)
    elif ext == ".npz":
        with np.load(p, allow_pickle=False) as z:
            names = [n for n in z.files if n != "voxel_m"]
            if key is not None:
                if key not in z.files:
                    raise ValueError(f"{p} has no array {key!r}; it holds {z.files}")
                arr = z[key]
            elif len(names) == 1:
                arr = z[names[0]]
            else:
                raise ValueError(f"{p} holds several arrays {names}; pass key= to choose one")
            if "voxel_m" in z.files:
                file_voxel = tuple(np.atleast_1d(z["voxel_m"]).astype(float))
                if len(file_voxel) == 1:
                    file_voxel = file_voxel * 3
    elif ext in (".tif", ".tiff"):
        import tifffile

        arr = tifffile.imread(str(p))
        if arr.ndim == 2:
            arr = arr[None]
    else:  # .vti
        import pyvista as pv

        grid = pv.read(str(p))
        dims = np.array(grid.dimensions)
        names = list(grid.cell_data.keys())
        if key is not None and key in grid.cell_data:
            data, cdims = grid.cell_data[key], dims - 1
        elif key is not None and key in grid.point_data:
            data, cdims = grid.point_data[key], dims
        elif key is not None:
            raise ValueError(f"{p} has no data array {key!r}; cell data {names}, "
                             f"point data {list(grid.point_data.keys())}")
        elif "phase" in grid.cell_data:
            data, cdims = grid.cell_data["phase"], dims - 1
        elif len(names) == 1:
            data, cdims = grid.cell_data[names[0]], dims - 1
        elif len(names) == 0 and len(grid.point_data.keys()) == 1:
            data, cdims = grid.point_data[list(grid.point_data.keys())[0]], dims
        else:
            raise ValueError(f"{p} holds several data arrays {names}; pass key= to choose one")
        cdims = np.maximum(cdims, 1)
        arr = np.asarray(data).reshape(cdims[2], cdims[1], cdims[0])  # x fastest -> [z, y, x]
        sx, sy, sz = grid.spacing
        file_voxel = (float(sz), float(sy), float(sx))
    arr = np.asarray(arr)
    if arr.ndim != 3 or arr.size == 0:
        raise ValueError(f"{p}: expected a non-empty 3-D image [z, y, x], got shape {arr.shape}")
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if not np.issubdtype(arr.dtype, np.integer):
        if np.issubdtype(arr.dtype, np.floating) and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
            arr = arr.astype(np.int32)
        else:
            raise ValueError(f"{p}: image of dtype {arr.dtype} is grey-scale (non-integer values); "
                             "segment / threshold it into integer phases first")
    vox = _voxel_tuple(voxel_m)
    if vox is None:
        vox = _voxel_tuple(file_voxel) if file_voxel is not None else None
    if vox is None:
        raise ValueError(f"{p}: the voxel size is not stored in the file; pass voxel_m= (metres)")
    if grains is not None:
        from fva.interface import grain_image

        return grain_image(arr, vox, int(grains), periodic)
    conducting = 1 if phase is None else int(phase)
    from fva.conduction import labels_text, present_labels

    present = present_labels(arr)   # a histogram for 8-bit images: no sorted copy of a tomogram
    if conducting not in present:
        raise ValueError(f"{p}: the conducting phase {conducting} is not in the image (labels present: "
                         f"{labels_text(present)}); choose it with --phase N / phase=")
    return VoxelImage(phase=arr, voxel_m=vox, periodic=tuple(periodic), conducting_phase=conducting)


def image_header(path, key: str | None = None) -> tuple[tuple, np.dtype] | None:
    """(shape, dtype) read from the file's header without loading the voxels (None if not known).

    .npy: the format header; .npz: the header of the member array; TIFF: the first series.
    """
    p = Path(path)
    ext = p.suffix.lower()
    try:
        if ext == ".npy":
            with open(p, "rb") as fh:
                return _npy_header(fh)
        if ext == ".npz":
            import zipfile

            with zipfile.ZipFile(p) as zf:
                names = [n for n in zf.namelist() if n.endswith(".npy") and n != "voxel_m.npy"]
                name = f"{key}.npy" if key is not None else (names[0] if len(names) == 1 else None)
                if name is None or name not in zf.namelist():
                    return None
                with zf.open(name) as fh:
                    return _npy_header(fh)
        if ext in (".tif", ".tiff"):
            import tifffile

            with tifffile.TiffFile(str(p)) as tf:
                s = tf.series[0]
                return tuple(s.shape), np.dtype(s.dtype)
    except Exception:  # a malformed header: let the loader report it
        return None
    return None


def _npy_header(fh) -> tuple[tuple, np.dtype]:
    fmt = np.lib.format
    version = fmt.read_magic(fh)
    read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
    shape, _, dtype = read(fh, max_header_size=1 << 20) if version != (1, 0) else read(fh)
    return tuple(shape), np.dtype(dtype)


def check_loadable(path, key: str | None = None) -> None:
    """``ValueError`` with the bytes needed and available when the image would not fit in memory.

    Counts the array as stored plus the solve's own working set at float32 (fva.conduction) — the
    least a solve of it needs — against the memory the system reports as available.
    """
    from fva.conduction import available_memory_bytes, estimate_memory_bytes

    head = image_header(path, key)
    if head is None:
        return
    shape, dtype = head
    n = int(np.prod([int(s) for s in shape], dtype=object)) if shape else 1
    need = n * dtype.itemsize + (estimate_memory_bytes(shape, "f32") if len(shape) == 3 else 0)
    avail = available_memory_bytes()
    if avail is not None and need > avail:
        raise ValueError(f"{Path(path).name}: image of shape {tuple(shape)} ({n:.3g} voxels, {dtype}) needs about "
                         f"{need / 2**30:.3g} GiB to load and solve, but only {avail / 2**30:.1f} GiB is available; "
                         "crop or coarsen it, or use a machine with more memory")


def _cell_array(a: np.ndarray) -> np.ndarray:
    """[z, y, x, ...] array -> VTK cell order (x fastest)."""
    a = np.asarray(a)
    if a.ndim == 3:
        return np.ascontiguousarray(a).ravel(order="C")
    return np.ascontiguousarray(a).reshape(-1, a.shape[-1])


_VTK_TYPES = {np.dtype(np.uint8): "UInt8", np.dtype(np.int8): "Int8", np.dtype(np.uint16): "UInt16",
              np.dtype(np.int16): "Int16", np.dtype(np.uint32): "UInt32", np.dtype(np.int32): "Int32",
              np.dtype(np.uint64): "UInt64", np.dtype(np.int64): "Int64", np.dtype(np.float32): "Float32",
              np.dtype(np.float64): "Float64"}


def write_vti_cells(path, shape, spacing_xyz, origin_m, arrays: dict) -> None:
    """A VTK XML ImageData file (``.vti``) of cell arrays, raw little-endian appended data, no compression.

    ``shape`` (nz, ny, nx); ``arrays``: name → array in VTK cell order (x fastest: :func:`_cell_array`), one value
    or one row of components per cell. The format is VTK's own (vtk.org, "VTK File Formats", XML ImageData with
    AppendedData encoding="raw", header_type UInt64); written directly, without importing VTK, and without
    compression (field data are floats that lz4 hardly shrinks).
    """
    nz, ny, nx = shape
    ncell = nx * ny * nz
    blocks, decl, offset = [], [], 0
    for name, a in arrays.items():
        a = np.ascontiguousarray(a)
        if a.dtype == np.bool_:
            a = a.astype(np.uint8)
        a = a.astype(a.dtype.newbyteorder("<"), copy=False)
        if a.dtype.newbyteorder("=") not in _VTK_TYPES:
            raise ValueError(f"field {name!r}: dtype {a.dtype} has no VTK type")
        ncomp = 1 if a.ndim == 1 else int(a.shape[1])
        if a.shape[0] != ncell:
            raise ValueError(f"field {name!r} has {a.shape[0]} cells, the grid {ncell}")
        decl.append(f'        <DataArray type="{_VTK_TYPES[a.dtype.newbyteorder("=")]}" Name="{name}" '
                    f'NumberOfComponents="{ncomp}" format="appended" offset="{offset}"/>\n')
        blocks.append(a)
        offset += 8 + a.nbytes
    ext = f"0 {nx} 0 {ny} 0 {nz}"
    head = ('<?xml version="1.0"?>\n'
            '<VTKFile type="ImageData" version="1.0" byte_order="LittleEndian" header_type="UInt64">\n'
            f'  <ImageData WholeExtent="{ext}" Origin="{origin_m[0]!r} {origin_m[1]!r} {origin_m[2]!r}" '
            f'Spacing="{spacing_xyz[0]!r} {spacing_xyz[1]!r} {spacing_xyz[2]!r}" Direction="1 0 0 0 1 0 0 0 1">\n'
            f'    <Piece Extent="{ext}">\n      <PointData>\n      </PointData>\n      <CellData>\n'
            + "".join(decl) + '      </CellData>\n    </Piece>\n  </ImageData>\n  <AppendedData encoding="raw">\n   _')
    with open(path, "wb") as f:
        f.write(head.encode("ascii"))
        for a in blocks:
            f.write(np.uint64(a.nbytes).astype("<u8").tobytes())
            a.tofile(f)
        f.write(b"\n  </AppendedData>\n</VTKFile>\n")


def save_vti(path, image: VoxelImage, *, potential=None, current=None, extra: dict | None = None,
             origin_m=(0.0, 0.0, 0.0)) -> Path:
    """Write ``image`` (phase as cell data) and optional fields to a ParaView .vti (atomically).

    potential : [z, y, x] (V); current : [z, y, x, 3] current density (A/m²) with components
    (jz, jy, jx) as in ConductivityResult, written as the vector (jx, jy, jz) named
    ``current_density``; extra : {name: [z, y, x] or [z, y, x, c] array}.
    """
    dz, dy, dx = image.voxel_m
    cells = {"phase": _cell_array(image.phase)}
    if image.labels is not None:
        cells["label"] = _cell_array(image.labels)
    if potential is not None:
        pot = np.asarray(potential, dtype=np.float32)  # float32 on disk: ParaView needs no more
        if pot.shape != image.shape:
            raise ValueError(f"potential must have shape {image.shape}, got {pot.shape}")
        cells["potential"] = _cell_array(pot)
    if current is not None:
        cur = np.asarray(current, dtype=np.float32)
        if cur.shape != image.shape + (3,):
            raise ValueError(f"current must have shape {image.shape + (3,)}, got {cur.shape}")
        cells["current_density"] = _cell_array(cur[..., ::-1])  # (jx, jy, jz) for ParaView
    for name, a in (extra or {}).items():
        a = np.asarray(a)
        if a.shape[:3] != image.shape:
            raise ValueError(f"extra field {name!r} must start with shape {image.shape}, got {a.shape}")
        cells[name] = _cell_array(a)
    p = Path(path)
    with atomic_path(p, suffix=".vti") as tmp:
        write_vti_cells(tmp, image.shape, (dx, dy, dz), origin_m, cells)
    return p


def save_npz(path, image: VoxelImage, **fields) -> Path:
    """Write phase (+ labels, voxel_m, and any named [z, y, x] fields) to a compressed .npz."""
    arrays = dict(phase=image.phase, voxel_m=np.asarray(image.voxel_m, dtype=np.float64),
                  periodic=np.asarray(image.periodic, dtype=bool))
    if image.labels is not None:
        arrays["labels"] = image.labels
    for k, v in fields.items():
        if v is not None:
            arrays[k] = np.asarray(v)
    p = Path(path)
    with atomic_path(p, suffix=".npz") as tmp:
        np.savez_compressed(tmp, **arrays)
    return p
