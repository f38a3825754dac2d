"""Places-LT (Liu et al. 2019): 365 scene classes of Places365-Standard, 62,500 training images
(4980 .. 5 per class), 20 validation images per class from the Places training set and the
Places365-Standard validation set as test (100 per class). Usually a ResNet-152 that starts from
ImageNet weights (`ltbench run --init-weights FILE`). Model selection on val, reporting on test.
"""

from __future__ import annotations

from pathlib import Path

from ltbench.data.splitfile import SplitFacts, SplitFileBenchmark, read_names_file
from ltbench.registry import benchmarks


@benchmarks.register()
class PlacesLT(SplitFileBenchmark):
    name = "places_lt"
    title = "Places-LT"
    num_classes = 365
    default_backbone = "resnet152"
    recipe_family = "places_lt"
    split_files = {"train": "Places_LT_train.txt", "val": "Places_LT_val.txt", "test": "Places_LT_test.txt"}
    published = {"train": SplitFacts(62_500, 365, 4980, 5), "val": SplitFacts(7_300, 365, 20, 20),
                 "test": SplitFacts(36_500, 365, 100, 100)}
    published_groups = (131, 163, 71)
    image_dirs = ("train", "val")
    val_source = "Places_LT_val.txt: 20 images per class from the Places365-Standard training set"
    test_source = "Places_LT_test.txt: the Places365-Standard validation set, 100 images per class"
    images_help = (
        "Images: Places365-Standard, the small images (256 x 256) in the easy directory structure "
        "(places365standard_easyformat.tar) from http://places2.csail.mit.edu/download.html. Its folder "
        "places365_standard/ is ROOT: ROOT/train/airfield/00000001.jpg and "
        "ROOT/val/airfield/Places365_val_00000001.jpg must exist.")
    splits_help = (
        "Split lists: Places_LT_train.txt, Places_LT_val.txt and Places_LT_test.txt of the OLTR release "
        "(Liu et al., github.com/zhmiao/OpenLongTailRecognition-OLTR), also in Kang et al.'s repository "
        "(github.com/facebookresearch/classifier-balancing, data/Places_LT/), which `ltbench data prepare` "
        "downloads when the network allows.")
    public_split_files = {name: f"data/Places_LT/{name}" for name in
                          ("Places_LT_train.txt", "Places_LT_val.txt", "Places_LT_test.txt")}
    names_files = ("categories_places365.txt",)  # Places365's "/a/apartment_building/outdoor 8" lines

    def name_classes(self, folders: list[str], names_file: Path | None) -> list[str]:
        """The category of each class folder as categories_places365.txt writes it, without its letter
        ("apartment_building-outdoor" -> "apartment_building/outdoor"); the folder name without the file."""
        names: dict[str, str] = {}
        for line in read_names_file(names_file).splitlines() if names_file is not None else []:
            parts = _category_parts(line.split()[0]) if line.split() else []
            names["-".join(parts)] = "/".join(parts)
        return [names.get("-".join(_category_parts(f)), f) for f in folders]


def _category_parts(path: str) -> list[str]:
    """"/a/apartment_building/outdoor" or "a/airfield" or "airfield" -> its words without the letter folder."""
    parts = [p for p in path.split("/") if p]
    return parts[1:] if len(parts) > 1 and len(parts[0]) == 1 else parts
