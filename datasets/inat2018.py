"""iNaturalist 2018 (Van Horn et al. 2018) as the long-tail literature uses it: 8,142 species,
437,513 training images (1000 .. 2 per class) and the official validation set (3 per class). There
is no separate test set: by convention model selection and reporting both use val, and every
record and table says so. No colour jitter in training (Kang et al.'s recipe).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, ClassVar

from ltbench.data.splitfile import SplitFacts, SplitFileBenchmark, read_names_file
from ltbench.errors import LtbenchError
from ltbench.registry import benchmarks

ANNOTATIONS = {"train": "train2018.json", "val": "val2018.json"}


def inat_split_lines(annotation_file: Path) -> list[str]:
    """The split-list lines of an iNaturalist 2018 annotation file ("file_name category_id" per image,
    in the file's image order), as Kang et al.'s gen_lists.py writes them."""
    try:
        with open(annotation_file, encoding="utf-8") as f:
            data = json.load(f)
        label = {a["image_id"]: a["category_id"] for a in data["annotations"]}
        return [f"{image['file_name']} {label[image['id']]}" for image in data["images"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise LtbenchError(f"{annotation_file}: not a readable iNaturalist 2018 annotation file "
                           f"({type(exc).__name__}: {exc}); download {annotation_file.name}.tar.gz again.") from None


@benchmarks.register()
class INat2018(SplitFileBenchmark):
    name = "inat2018"
    title = "iNaturalist 2018"
    num_classes = 8142
    default_backbone = "resnet50"
    recipe_family = "inat2018"
    params: ClassVar[dict[str, Any]] = {"crop": 224, "resize": 256, "color_jitter": 0.0}
    split_files = {"train": "iNaturalist18_train.txt", "val": "iNaturalist18_val.txt"}
    published = {"train": SplitFacts(437_513, 8142, 1000, 2), "val": SplitFacts(24_426, 8142, 3, 3)}
    image_dirs = ("train_val2018",)
    val_source = "iNaturalist18_val.txt: the official iNaturalist 2018 validation set, 3 images per class"
    test_source = "val (the iNaturalist convention: no separate test set; model selection and reporting both use val)"
    images_help = (
        "Images: the iNaturalist 2018 competition data (github.com/visipedia/inat_comp/tree/master/2018): "
        "train_val2018.tar.gz (120 GB) and the annotations train2018.json.tar.gz and val2018.json.tar.gz. "
        "Extract the images under ROOT so that ROOT/train_val2018/Plantae/7477/<hash>.jpg exists, and "
        "train2018.json and val2018.json into ROOT: `ltbench data prepare inat2018` writes the split lists "
        "from them.")
    splits_help = (
        "Split lists: iNaturalist18_train.txt and iNaturalist18_val.txt of Kang et al. "
        "(github.com/facebookresearch/classifier-balancing, data/iNaturalist18/: gen_lists.py writes them from "
        "the annotation files, as `ltbench data prepare inat2018` does; the val list is in the repository and "
        "is downloaded when the network allows).")
    public_split_files = {"iNaturalist18_val.txt": "data/iNaturalist18/iNaturalist18_val.txt"}
    # the taxonomy released after the 2018 competition, else the categories of the (smaller) val annotations
    names_files = ("categories.json", "val2018.json")

    def name_classes(self, folders: list[str], names_file: Path | None) -> list[str]:
        """The species name of each category id (the label), from categories.json (a list of {"id",
        "name", ...}) or an annotation file's "categories"; the folder ("Plantae/7477") where a name is
        missing or only the id."""
        names: dict[int, str] = {}
        if names_file is not None:
            try:
                data = json.loads(read_names_file(names_file))
            except ValueError:
                raise LtbenchError(f"{names_file} is not JSON; download it again, or remove it (then the class "
                                   "folders name the classes).") from None
            categories = data.get("categories", []) if isinstance(data, dict) else data
            names = {c["id"]: str(c["name"]) for c in categories if isinstance(c, dict)
                     and type(c.get("id")) is int and isinstance(c.get("name"), str) and c["name"].strip()}
        return [n if (n := names.get(c, "")) and not n.isdigit() else f for c, f in enumerate(folders)]

    def prepare_local(self, root: Path, split_dir: Path) -> list[str]:
        """Write the missing split lists from train2018.json / val2018.json (under ROOT or the split
        folder); existing lists are never overwritten."""
        done = []
        for split, json_name in ANNOTATIONS.items():
            target = Path(split_dir) / self.split_files[split]
            source = next((p for p in (Path(root) / json_name, Path(split_dir) / json_name) if p.is_file()), None)
            if target.exists() or source is None:
                continue
            lines = inat_split_lines(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(target.name + ".tmp")
            tmp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
            os.replace(tmp, target)
            done.append(f"wrote {target} ({len(lines):,} images) from {source}")
        return done
