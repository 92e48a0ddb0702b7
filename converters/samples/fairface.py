"""A tiny FairFace tree: the two label CSVs (LF, header `file,age,gender,race,service_test`) + train/, val/."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from facecorpus.converters.samples.faces import look_for_person, save_face

HEADER = "file,age,gender,race,service_test"
TRAIN = [  # the first two are the real first rows of fairface_label_train.csv
    "train/1.jpg,50-59,Male,East Asian,True",
    "train/2.jpg,30-39,Female,Indian,False",
    "train/3.jpg,more than 70,Female,Latino_Hispanic,True",
    "train/4.jpg,0-2,Male,Middle Eastern,False",
    "train/5.jpg,10-19,Female,Southeast Asian,True",
]
VAL = [  # the first two are the real first rows of fairface_label_val.csv
    "val/1.jpg,3-9,Male,East Asian,False",
    "val/2.jpg,50-59,Female,East Asian,True",
    "val/3.jpg,20-29,Male,Black,False",
    "val/4.jpg,60-69,Female,White,True",
]
TEXTS = {"fairface/train-1/attributes/0": "fairface age: 50-59; gender: male; race: east asian",
         "fairface/train-3/attributes/0": "fairface age: more than 70; gender: female; race: latino hispanic",
         "fairface/val-1/attributes/0": "fairface age: 3-9; gender: male; race: east asian"}


def write(root: Path, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for name, rows in (("fairface_label_train.csv", TRAIN), ("fairface_label_val.csv", VAL)):
        (root / name).write_bytes(("\n".join([HEADER, *rows]) + "\n").encode())
        for row in rows:  # grey hair from the 60-69 bin on, long hair on women
            file, age, gender, *_ = row.split(",")
            youngest = int(age.split("-")[0]) if "-" in age else int(age.split()[-1])  # "more than 70": 70
            look = look_for_person(rng, age=youngest, female=gender == "Female")
            save_face(root / file, look, rng, (224, 224))  # padding-0.25 face chips are 224 px
    # val is FairFace's held-out evaluation set, hence `test`.
    return {"splits": {"train": len(TRAIN), "test": len(VAL)}, "texts": TEXTS}
