"""digits-LT: scikit-learn's bundled handwritten digits (8x8, 10 classes, 1,797 images) made
long-tailed. Needs no download; the embedded default benchmark.

Per class (numpy seed 0 permutation): 50 images for test, 20 for validation, and a long-tailed
training set from the rest: n_i = int(100 * IR^(-i/9)), IR 20 by default (100 .. 5 images).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ltbench.data.benchmark import Benchmark, check_imbalance, lt_counts
from ltbench.registry import benchmarks

if TYPE_CHECKING:
    from ltbench.data.splits import Splits

TEST_PER_CLASS = 50
VAL_PER_CLASS = 20
N_MAX = 100


@benchmarks.register()
class DigitsLT(Benchmark):
    name = "digits_lt"
    title = "digits-LT"
    num_classes = 10
    in_channels = 1
    default_backbone = "small_cnn"
    recipe_family = "digits"
    params = {"imbalance": 20.0}

    def check_params(self, params: dict[str, Any]) -> None:
        check_imbalance(self.name, params["imbalance"], N_MAX, self.num_classes)

    def label(self, params: dict[str, Any]) -> str:
        return f"{self.title} IR{params['imbalance']:g}"

    def read_class_names(self, params: dict[str, Any], data_root: Path,
                         split_root: Path | None = None) -> list[str]:
        return [str(d) for d in range(self.num_classes)]  # class d is the digit d

    def load(self, params: dict[str, Any], data_root: Path, download: bool = True,
             split_root: Path | None = None) -> Splits:
        import torch
        from sklearn.datasets import load_digits

        from ltbench.data.splits import Augment, ImageSet, ShotRule, Splits

        d = load_digits()
        images = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)[:, None]  # (N, 1, 8, 8)
        labels = d.target.astype(np.int64)
        counts = lt_counts(N_MAX, self.num_classes, params["imbalance"])
        rng = np.random.RandomState(0)
        test, val, train = [], [], []
        for c in range(self.num_classes):
            idx = rng.permutation(np.where(labels == c)[0])
            test.append(idx[:TEST_PER_CLASS])
            val.append(idx[TEST_PER_CLASS:TEST_PER_CLASS + VAL_PER_CLASS])
            train.append(idx[TEST_PER_CLASS + VAL_PER_CLASS:][:counts[c]])

        def subset(parts: list[np.ndarray], name: str) -> ImageSet:
            i = np.concatenate(parts)
            return ImageSet(torch.from_numpy(images[i]), torch.from_numpy(labels[i]), name)

        return Splits(
            train=subset(train, "train"), val=subset(val, "val"), test=subset(test, "test"),
            num_classes=self.num_classes, mean=(0.3053,), std=(0.3759,), augment=Augment(crop_padding=1, flip=False),
            # Thresholds scaled to a 100-image head so that many, medium and few are all non-empty.
            shot_rule=ShotRule(many_above=50, few_below=15, name="digits (many n > 50, few n < 15)"),
            info={"train_size": int(sum(len(t) for t in train)), "val_counts": [VAL_PER_CLASS] * self.num_classes,
                  "val_source": "20 images per class held out", "test_source": "50 images per class held out"},
        )
