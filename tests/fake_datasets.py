"""Builders for tiny FAKE copies of public re-ID datasets that torchreid 0.2.5's own
dataset classes (torchreid.reid.data.datasets.image.*) parse.

Every builder takes ``root`` (the torchreid ``root``) and writes ``root/<dataset_dir>/...``.
Images are real, tiny, decodable files, so a fake dataset loads like a real one; a test about bad
images damages a file itself (the plugin then refuses the run and names the file, see
tests/test_faults.py). Each builder returns a dict with the numbers torchreid should report for
split 0 (ids/images per subset).

Needs: numpy, Pillow; cuhk03 also needs h5py + scipy; grid needs scipy.
"""

from __future__ import annotations

import os
import os.path as osp

import numpy as np
from PIL import Image


def _img(path, size=(8, 16), color=(128, 64, 32), fmt=None):
    """Write a tiny real image (W x H = size). Format follows the extension unless fmt given."""
    os.makedirs(osp.dirname(path), exist_ok=True)
    Image.new("RGB", size, color).save(path, format=fmt)


# --------------------------------------------------------------------------------------
# Market-1501  (name 'market1501', class Market1501)
# --------------------------------------------------------------------------------------
def make_market1501(root, new_layout=True):
    """root/market1501/Market-1501-v15.09.15/{bounding_box_train,query,bounding_box_test}/*.jpg

    new_layout=False puts the three folders directly under root/market1501 (deprecated
    layout, accepted with a warning).
    """
    base = osp.join(root, "market1501")
    d = osp.join(base, "Market-1501-v15.09.15") if new_layout else base
    train = [
        "0002_c1s1_000451_03.jpg",
        "0002_c2s1_000551_01.jpg",
        "0007_c1s6_028546_01.jpg",
        "0007_c3s3_077419_03.jpg",
        "0010_c5s1_000001_01.jpg",
        "0010_c6s1_000001_01.jpg",
    ]
    query = ["0001_c1s1_001051_00.jpg", "0003_c2s1_000301_00.jpg"]
    gallery = [
        "0001_c2s1_000301_01.jpg",
        "0003_c4s1_000301_02.jpg",
        "0000_c3s1_000101_01.jpg",  # pid 0 = background/distractor: KEPT
        "-1_c1s1_000401_03.jpg",
    ]  # pid -1 = junk: DROPPED
    for sub, names in (("bounding_box_train", train), ("query", query), ("bounding_box_test", gallery)):
        for n in names:
            _img(osp.join(d, sub, n))
    # optional 500k distractors folder (only read if market1501_500k=True): d/images/*.jpg
    return dict(train_ids=3, train_imgs=6, query_ids=2, query_imgs=2, gallery_ids=3, gallery_imgs=3)


# --------------------------------------------------------------------------------------
# DukeMTMC-reID  (name 'dukemtmcreid', class DukeMTMCreID)
# --------------------------------------------------------------------------------------
def make_dukemtmcreid(root):
    """root/dukemtmc-reid/DukeMTMC-reID/{bounding_box_train,query,bounding_box_test}/*.jpg"""
    d = osp.join(root, "dukemtmc-reid", "DukeMTMC-reID")
    train = ["0001_c2_f0046182.jpg", "0001_c5_f0051341.jpg", "0003_c1_f0044158.jpg", "0003_c8_f0045997.jpg"]
    query = ["0005_c2_f0046985.jpg", "0008_c3_f0047009.jpg"]
    gallery = ["0005_c1_f0045999.jpg", "0008_c7_f0060000.jpg", "0000_c6_f0030000.jpg"]
    for sub, names in (("bounding_box_train", train), ("query", query), ("bounding_box_test", gallery)):
        for n in names:
            _img(osp.join(d, sub, n))
    return dict(train_ids=2, train_imgs=4, query_ids=2, query_imgs=2, gallery_ids=3, gallery_imgs=3)


# --------------------------------------------------------------------------------------
# MSMT17  (name 'msmt17', class MSMT17)
# --------------------------------------------------------------------------------------
def make_msmt17(root, version="V1"):
    """root/msmt17/MSMT17_V1/{train,test}/<pid>/<file>.jpg + list_{train,val,query,gallery}.txt
    version="V2": root/msmt17/MSMT17_V2/{mask_train_v2,mask_test_v2}/... (same list files).
    List line: "<relpath> <pid>\\n", relpath relative to the train/test dir, camid = relpath.split('_')[2]-1.
    """
    main = "MSMT17_" + version
    tr_dir, te_dir = {"V1": ("train", "test"), "V2": ("mask_train_v2", "mask_test_v2")}[version]
    d = osp.join(root, "msmt17", main)
    lists = {
        # (list name, dir, [(relpath, pid)])
        "list_train.txt": (
            tr_dir,
            [
                ("0000/0000_000_01_0303morning_0015_0.jpg", 0),
                ("0000/0000_001_05_0303morning_0020_1.jpg", 0),
                ("0001/0001_000_02_0303noon_0101_0.jpg", 1),
                ("0001/0001_001_03_0303noon_0200_1.jpg", 1),
            ],
        ),
        "list_val.txt": (tr_dir, [("0001/0001_002_04_0303noon_0300_2.jpg", 1)]),
        "list_query.txt": (
            te_dir,
            [("0000/0000_000_01_0303morning_0001_0.jpg", 0), ("0001/0001_000_02_0303morning_0002_0.jpg", 1)],
        ),
        "list_gallery.txt": (
            te_dir,
            [
                ("0000/0000_001_07_0303afternoon_0003_0.jpg", 0),
                ("0001/0001_001_15_0303afternoon_0004_0.jpg", 1),
                ("0002/0002_000_09_0303afternoon_0005_0.jpg", 2),
            ],
        ),
    }
    for list_name, (sub, items) in lists.items():
        with open(osp.join(_mk(d), list_name), "w") as f:
            for rel, pid in items:
                _img(osp.join(d, sub, rel))
                f.write(f"{rel} {pid}\n")  # NO blank trailing line
    return dict(train_ids=2, train_imgs=4, query_ids=2, query_imgs=2, gallery_ids=3, gallery_imgs=3)


def _mk(d):
    os.makedirs(d, exist_ok=True)
    return d


# --------------------------------------------------------------------------------------
# CUHK03  (name 'cuhk03', class CUHK03)
# --------------------------------------------------------------------------------------
CUHK03_PERSONS = [(1, 1), (1, 2), (1, 3), (2, 1), (2, 2)]  # (camera pair, pid within pair), 1-based
CUHK03_IMGIDS = [0, 1, 5, 6]  # 0-based cell index; <5 -> view 1, >=5 -> view 2


def make_cuhk03(root):
    """root/cuhk03/cuhk03_release/cuhk-03.mat                     (MATLAB v7.3 = HDF5, read with h5py)
       root/cuhk03/cuhk03_new_protocol_config_detected.mat        (MATLAB v5, read with scipy.io.loadmat)
       root/cuhk03/cuhk03_new_protocol_config_labeled.mat         (MATLAB v5)
    torchreid extracts PNGs into root/cuhk03/images_{detected,labeled}/ and writes 4 split jsons on first run.

    Content: 2 camera pairs (3 + 2 persons); each person has images in cells 0,1 (view 1) and 5,6
    (view 2), the other 6 of its 10 cells are MATLAB-empty. Classic testsets: all 20 = {(2,1),(2,2)}.
    New protocol: train = persons (1,1),(1,2),(1,3); query = view-1 image 01 of (2,1),(2,2);
    gallery = the other 6 images of (2,1),(2,2).
    """
    import h5py
    from scipy.io import savemat

    d = osp.join(root, "cuhk03")
    os.makedirs(osp.join(d, "cuhk03_release"), exist_ok=True)
    rng = np.random.RandomState(0)
    with h5py.File(osp.join(d, "cuhk03_release", "cuhk-03.mat"), "w") as f:
        refs = f.create_group("#refs#")
        counter = [0]

        def put(arr):
            name = f"r{counter[0]}"
            counter[0] += 1
            ds = refs.create_dataset(name, data=arr)
            return ds

        def empty():
            # how MATLAB v7.3 stores an empty cell: uint64 [0 0] with MATLAB_empty=1
            ds = put(np.zeros(2, dtype=np.uint64))
            ds.attrs["MATLAB_class"] = np.bytes_("double")
            ds.attrs["MATLAB_empty"] = np.uint8(1)
            return ds.ref

        def image(h=16, w=8):
            # torchreid does mat[ref][:].T -> (H, W, 3); so store (3, W, H) uint8
            img = rng.randint(0, 256, size=(h, w, 3), dtype=np.uint8)
            ds = put(img.T)
            ds.attrs["MATLAB_class"] = np.bytes_("uint8")
            return ds.ref

        for kind in ("detected", "labeled"):
            pair_refs = []
            for campid in (1, 2):
                pids = [p for c, p in CUHK03_PERSONS if c == campid]
                cells = np.empty((10, len(pids)), dtype=h5py.ref_dtype)  # stored (10, n); .T -> (n, 10)
                for j, _ in enumerate(pids):
                    for k in range(10):
                        cells[k, j] = image() if k in CUHK03_IMGIDS else empty()
                pair_refs.append(put(cells).ref)
            top = f.create_dataset(kind, data=np.array([pair_refs], dtype=h5py.ref_dtype))  # shape (1, 2)
            top.attrs["MATLAB_class"] = np.bytes_("cell")
        test_refs = []
        for _ in range(20):
            ts = np.array([[2, 1], [2, 2]], dtype=np.float64)  # rows [campid, pid], 1-based
            test_refs.append(put(ts.T).ref)  # stored (2, k); .T -> (k, 2)
        f.create_dataset("testsets", data=np.array([test_refs], dtype=h5py.ref_dtype))  # (1, 20)

    # new protocol (Zhong et al.): filelist names = torchreid's extracted PNG names
    names, labels, cams = [], [], []
    for gid, (c, p) in enumerate(CUHK03_PERSONS, start=1):
        for k in CUHK03_IMGIDS:
            view = 1 if k < 5 else 2
            names.append(f"{c:d}_{p:03d}_{view:d}_{k + 1:02d}.png")
            labels.append(gid)  # global person label (any ints; only equality matters)
            cams.append(view)
    idx = np.arange(1, len(names) + 1)  # 1-based
    train_idx = idx[:12]
    test = idx[12:]
    query_idx = np.array([i for i in test if names[i - 1].endswith("_1_01.png")])
    gallery_idx = np.array([i for i in test if i not in set(query_idx)])
    filelist = np.empty((len(names), 1), dtype=object)
    for i, n in enumerate(names):
        filelist[i, 0] = n
    cfg = dict(
        filelist=filelist,  # N x 1 cell of char
        labels=np.array(labels, dtype=np.float64)[:, None],  # N x 1
        camId=np.array(cams, dtype=np.float64)[:, None],  # N x 1 (not read by torchreid)
        # 1-based column vectors; MUST be an integer dtype (torchreid indexes numpy arrays with
        # them: a float64 idx raises "IndexError: arrays used as indices must be of integer type")
        train_idx=train_idx.astype(np.int32)[:, None],
        query_idx=query_idx.astype(np.int32)[:, None],
        gallery_idx=gallery_idx.astype(np.int32)[:, None],
    )
    for kind in ("detected", "labeled"):
        savemat(osp.join(d, f"cuhk03_new_protocol_config_{kind}.mat"), cfg)
    return dict(
        new=dict(train_ids=3, train_imgs=12, query_ids=2, query_imgs=2, gallery_ids=2, gallery_imgs=6),
        classic=dict(train_ids=3, train_imgs=12, query_ids=2, query_imgs=8, gallery_ids=2, gallery_imgs=8),
    )


# --------------------------------------------------------------------------------------
# CUHK-SYSU  (name 'cuhksysu', class CUHKSYSU)
# --------------------------------------------------------------------------------------
def make_cuhksysu(root):
    """root/cuhksysu/cropped_images/p<pid>_s<scene>_<n>.jpg (flat folder)."""
    d = osp.join(root, "cuhksysu", "cropped_images")
    for n in ["p1_s1_1.jpg", "p1_s2_1.jpg", "p2_s1_2.jpg", "p11422_s16929_1.jpg", "p11422_s16930_1.jpg"]:
        _img(osp.join(d, n))
    return dict(train_ids=3, train_imgs=5, query_ids=1, query_imgs=1, gallery_ids=1, gallery_imgs=1)


# --------------------------------------------------------------------------------------
# CUHK02  (name 'cuhk02', class CUHK02)
# --------------------------------------------------------------------------------------
def make_cuhk02(root, ids_per_pair=2):
    """root/cuhk02/Dataset/P{1..5}/cam{1,2}/<pid>_<n>.png ; P1-P4 train, P5 cam1 query / cam2 gallery."""
    d = osp.join(root, "cuhk02", "Dataset")
    for pi, pair in enumerate(["P1", "P2", "P3", "P4", "P5"]):
        for cam in ("cam1", "cam2"):
            for k in range(ids_per_pair):
                pid = 100 * (pi + 1) + k
                _img(osp.join(d, pair, cam, "{:04d}_{}.png".format(pid, 1 if cam == "cam1" else 3)))
    n = ids_per_pair
    return dict(train_ids=4 * n, train_imgs=8 * n, query_ids=n, query_imgs=n, gallery_ids=n, gallery_imgs=n)


# --------------------------------------------------------------------------------------
# PRID (single shot)  (name 'prid', class PRID)
# --------------------------------------------------------------------------------------
def make_prid(root, n_cam_a=200, n_cam_b=749):
    """root/prid2011/prid_2011/single_shot/cam_{a,b}/person_%04d.png
    torchreid hard-codes ids 1..200 (both cams) and cam_b 201..749 (gallery distractors); it
    never lists the folders, so for a dataset whose images can all be READ you need
    cam_a 1..200 and cam_b 1..749 (smaller n only works if nobody loads the missing images).
    """
    d = osp.join(root, "prid2011", "prid_2011", "single_shot")
    for i in range(1, n_cam_a + 1):
        _img(osp.join(d, "cam_a", f"person_{i:04d}.png"), size=(4, 8))
    for i in range(1, n_cam_b + 1):
        _img(osp.join(d, "cam_b", f"person_{i:04d}.png"), size=(4, 8))
    return dict(train_ids=100, train_imgs=200, query_ids=100, query_imgs=100, gallery_ids=649, gallery_imgs=649)


# --------------------------------------------------------------------------------------
# GRID  (name 'grid', class GRID)
# --------------------------------------------------------------------------------------
def make_grid(root):
    """root/grid/underground_reid/{probe,gallery}/<id4>_<cam>_<...>.jpeg + features_and_partitions.mat
    features_and_partitions.mat (MATLAB v5, scipy.io.loadmat): trainIdxAll = 1x10 cell, each a 1x1
    struct whose THIRD field is a 1x125 vector of training person ids (only position 2 is read).
    Here: even splits train on ids 1..125, odd splits on 126..250.
    Images: probe ids 1, 2 (cam 1) and 126, 127 (cam 1); gallery ids 1, 2 (cam 2), 126, 127 (cam 3),
    and 0000 distractor (cam 4).
    """
    from scipy.io import savemat

    d = osp.join(root, "grid", "underground_reid")
    for n in [
        "0001_1_25004_107_32_130.jpeg",
        "0002_1_25010_100_30_120.jpeg",
        "0126_1_25020_100_30_120.jpeg",
        "0127_1_25030_100_30_120.jpeg",
    ]:
        _img(osp.join(d, "probe", n), fmt="JPEG")
    for n in [
        "0001_2_25104_107_32_130.jpeg",
        "0002_2_25110_100_30_120.jpeg",
        "0126_3_25120_100_30_120.jpeg",
        "0127_3_25130_100_30_120.jpeg",
        "0000_4_26000_100_30_120.jpeg",
    ]:
        _img(osp.join(d, "gallery", n), fmt="JPEG")
    dt = [("idx_probe", "O"), ("idx_gallery", "O"), ("idx_train", "O")]  # field NAMES are not read
    cells = np.empty((1, 10), dtype=object)
    for k in range(10):
        tr = np.arange(1, 126) if k % 2 == 0 else np.arange(126, 251)
        te = np.setdiff1d(np.arange(1, 251), tr)
        s = np.empty((1, 1), dtype=dt)
        s[0, 0] = (te[None, :].astype(np.float64), te[None, :].astype(np.float64), tr[None, :].astype(np.float64))
        cells[0, k] = s
    savemat(osp.join(d, "features_and_partitions.mat"), {"trainIdxAll": cells})
    return dict(train_ids=2, train_imgs=4, query_ids=2, query_imgs=2, gallery_ids=3, gallery_imgs=3)


# --------------------------------------------------------------------------------------
# VIPeR  (name 'viper', class VIPeR)
# --------------------------------------------------------------------------------------
def make_viper(root, n_ids=4):
    """root/viper/VIPeR/cam_{a,b}/*.bmp ; identity k = k-th file of each folder in sorted order."""
    d = osp.join(root, "viper", "VIPeR")
    for k in range(n_ids):
        _img(osp.join(d, "cam_a", f"{k:03d}_45.bmp"), fmt="BMP")
        _img(osp.join(d, "cam_b", f"{k:03d}_90.bmp"), fmt="BMP")
    ntr = n_ids // 2
    nte = n_ids - ntr
    return dict(train_ids=ntr, train_imgs=2 * ntr, query_ids=nte, query_imgs=nte, gallery_ids=nte, gallery_imgs=nte)


# --------------------------------------------------------------------------------------
# QMUL-iLIDS  (name 'ilids', class iLIDS)
# --------------------------------------------------------------------------------------
def make_ilids(root):
    """root/ilids/i-LIDS_Pedestrian/Persons/<pid:04d><seq:03d>.jpg ; MUST be exactly 476 .jpg files
    over exactly 119 ids (asserted when splits.json is created), every id needs >= 2 images.
    Here: 119 ids x 4 images (seq 1..4)."""
    d = osp.join(root, "ilids", "i-LIDS_Pedestrian", "Persons")
    for pid in range(1, 120):
        for seq in range(1, 5):
            _img(osp.join(d, f"{pid:04d}{seq:03d}.jpg"), size=(4, 8))
    return dict(train_ids=59, train_imgs=236, query_ids=60, query_imgs=60, gallery_ids=60, gallery_imgs=60)


BUILDERS = {
    "market1501": make_market1501,
    "dukemtmcreid": make_dukemtmcreid,
    "msmt17": make_msmt17,
    "cuhk03": make_cuhk03,
    "cuhksysu": make_cuhksysu,
    "cuhk02": make_cuhk02,
    "prid": make_prid,
    "grid": make_grid,
    "viper": make_viper,
    "ilids": make_ilids,
}
