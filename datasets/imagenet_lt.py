"""ImageNet-LT (Liu et al. 2019, "Large-Scale Long-Tailed Recognition in an Open World"): 1,000
ImageNet classes, 115,846 training images (1280 .. 5 per class), a balanced validation split drawn
from the ImageNet training set (20 per class) and the ILSVRC-2012 validation set as test (50 per
class). Model selection on val, reporting on test.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

from ltbench.data.splitfile import SplitFacts, SplitFileBenchmark, read_names_file, read_split_file
from ltbench.registry import benchmarks


@benchmarks.register()
class ImageNetLT(SplitFileBenchmark):
    name = "imagenet_lt"
    title = "ImageNet-LT"
    num_classes = 1000
    default_backbone = "resnext50_32x4d"
    recipe_family = "imagenet_lt"
    split_files = {"train": "ImageNet_LT_train.txt", "val": "ImageNet_LT_val.txt", "test": "ImageNet_LT_test.txt"}
    published = {"train": SplitFacts(115_846, 1000, 1280, 5), "val": SplitFacts(20_000, 1000, 20, 20),
                 "test": SplitFacts(50_000, 1000, 50, 50)}
    published_groups = (385, 479, 136)
    image_dirs = ("train", "val")
    val_source = "ImageNet_LT_val.txt: 20 images per class from the ImageNet 2012 training set, none in the LT training list"
    test_source = "ImageNet_LT_test.txt: the ILSVRC-2012 validation set, 50 images per class"
    images_help = (
        "Images: ImageNet 2012 (ILSVRC2012_img_train.tar, 138 GB, and ILSVRC2012_img_val.tar, 6.3 GB) from "
        "https://image-net.org/download-images (needs a free account, so ltbench cannot fetch them). Extract "
        "under ROOT so that ROOT/train/n01440764/n01440764_10026.JPEG exists (the train archive holds one tar "
        "per class: extract each into a folder of its name) and the validation images into ROOT/val/. The "
        "split lists expect them sorted into class folders (ROOT/val/n01440764/ILSVRC2012_val_00000293.JPEG): "
        "`ltbench data prepare imagenet_lt` does that (hard links) once ImageNet_LT_test.txt is in place.")
    splits_help = (
        "Split lists: ImageNet_LT_train.txt, ImageNet_LT_val.txt and ImageNet_LT_test.txt of the OLTR release "
        "(Liu et al., github.com/zhmiao/OpenLongTailRecognition-OLTR, the ImageNet_LT folder behind its data "
        "link); the val and test lists are also in Kang et al.'s repository "
        "(github.com/facebookresearch/classifier-balancing, data/ImageNet_LT/), which `ltbench data prepare` "
        "downloads when the network allows.")
    public_split_files = {"ImageNet_LT_val.txt": "data/ImageNet_LT/ImageNet_LT_val.txt",
                          "ImageNet_LT_test.txt": "data/ImageNet_LT/ImageNet_LT_test.txt"}
    # wnid -> words: Kaggle's ILSVRC LOC_synset_mapping.txt, ImageNet's words.txt, Caffe's synset_words.txt
    names_files = ("LOC_synset_mapping.txt", "words.txt", "synset_words.txt")

    def name_classes(self, folders: list[str], names_file: Path | None) -> list[str]:
        """The first of each wnid's words ("n01440764 tench, Tinca tinca" -> "tench"); a name that two
        classes share gets its wnid ("crane (n02012849)"); the wnid where the file lacks it."""
        words: dict[str, str] = {}
        for line in read_names_file(names_file).splitlines() if names_file is not None else []:
            fields = line.split(None, 1)  # "wnid words" or "wnid\twords"
            if len(fields) == 2 and fields[1].split(",")[0].strip():
                words[fields[0]] = fields[1].split(",")[0].strip()
        first = [words.get(w, w) for w in folders]
        shared = Counter(first)
        return [f"{n} ({w})" if shared[n] > 1 and n != w else n for n, w in zip(first, folders, strict=True)]

    def prepare_local(self, root: Path, split_dir: Path) -> list[str]:
        """Sort a flat ILSVRC-2012 validation folder (ROOT/val/ILSVRC2012_val_*.JPEG) into the class
        folders that ImageNet_LT_test.txt names, with hard links (symbolic links where the file system
        has none); the flat files stay."""
        test_list = Path(split_dir) / self.split_files["test"]
        val = Path(root) / "val"
        if not test_list.is_file() or not val.is_dir():
            return []
        flat = {p.name for p in val.glob("ILSVRC2012_val_*.JPEG")}
        if not flat:
            return []
        entries, _ = read_split_file(test_list, self.num_classes, max_problems=None)
        linked = 0
        for rel in entries.paths:
            parts = Path(rel).parts
            dst = Path(root) / rel
            if len(parts) != 3 or parts[0] != "val" or parts[2] not in flat or dst.exists():
                continue
            dst.parent.mkdir(parents=True, exist_ok=True)
            src = val / parts[2]
            try:
                os.link(src, dst)
            except OSError:
                dst.symlink_to(os.path.relpath(src, dst.parent))
            linked += 1
        if not linked:
            return []
        return [f"sorted {linked:,} images of the flat validation folder {val} into the class folders that "
                f"{test_list.name} lists (val/<wnid>/, hard links; the flat files stay)"]
