"""Writes refer/refcoco+/refs(unc).p and instances.json from gt.json (the
ground truth of the official grounding fixture), the way REFER's files are
laid out: refs as Python 2 wrote them (protocol 0, str as STRING, one
unicode sentence as UNICODE), instances as a COCO json. Also writes
npy/itm__ref0__mask_upsampled_every8.npy, every 8th row and column of the
fixture's upsampled map. Run from this folder:
    python3 make_refer.py /path/to/shared/fixtures/grounding
"""
import io
import json
import pickle
import sys

import numpy as np


class Python2Pickler(pickle._Pickler):
    """Protocol 0 with Python 2's str opcode for ASCII text."""

    def save_str(self, obj):
        if obj.isascii():
            self.write(b"S" + repr(obj).encode("ascii") + b"\n")
            self.memoize(obj)
        else:
            super().save_str(obj)

    dispatch = dict(pickle._Pickler.dispatch)
    dispatch[str] = save_str


gt = json.load(open("gt.json"))
texts = {r["ref_id"]: r["text"] for r in json.load(open("refs.json"))}
refs, annotations = [], []
for key, box in gt["gt_boxes_xywh"].items():
    ref_id = int(key)
    image_id = gt["ref_image_id"][key]
    raw = texts[ref_id] + (" caf\u00e9" if ref_id == 3 else "")
    refs.append({
        "image_id": image_id, "split": gt["splits"][key], "sentences": [
            {"tokens": raw.split(), "raw": raw, "sent_id": 100 + ref_id, "sent": raw}],
        "file_name": "COCO_train2014_%012d_%d.jpg" % (image_id, ref_id), "category_id": 1,
        "ann_id": 1000 + ref_id, "sent_ids": [100 + ref_id], "ref_id": ref_id})
    annotations.append({"id": 1000 + ref_id, "image_id": image_id, "bbox": box, "category_id": 1,
                        "area": box[2] * box[3], "iscrowd": 0, "segmentation": []})
images = [{"id": int(i), "height": s["height"], "width": s["width"], "file_name": "%012d.jpg" % int(i)}
          for i, s in gt["image_sizes"].items()]
buffer = io.BytesIO()
Python2Pickler(buffer, protocol=0).dump(refs)
open("refer/refcoco+/refs(unc).p", "wb").write(buffer.getvalue())
json.dump({"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "person"}]},
          open("refer/refcoco+/instances.json", "w"))
if len(sys.argv) > 1:
    full = np.load(sys.argv[1] + "/npy/itm__ref0__mask_upsampled.npy")
    np.save("npy/itm__ref0__mask_upsampled_every8.npy", np.ascontiguousarray(full[::8, ::8]))
# The file reads back as the same refs.
assert pickle.load(open("refer/refcoco+/refs(unc).p", "rb")) == refs
