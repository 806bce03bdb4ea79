"""split: a deterministic train/val/test split from the seed, grouped and stratified.

Samples that share a `group` (a patient, an exposure, an observation) always
land in the same set. Groups are stratified by a key: the class label for
classification; for segmentation, the rarest foreground class a sample shows,
so that every set sees the rare class.
"""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np

from sciconv.config import ConfigError, DatasetConfig
from sciconv.paths import DatasetPaths
from sciconv.runtime import atomic_write_json, derive_seed, log
from sciconv.store import StoreReader


def split_groups(groups: dict[str, str], val_fraction: float, test_fraction: float,
                 seed: int, fill: tuple[str, ...] = ("val", "test")) -> dict[str, list[str]]:
    """Assign each group to train/val/test, per stratum, in proportion (val and test get at least one when possible)."""
    rng = np.random.default_rng(seed)
    by_stratum: dict[str, list[str]] = defaultdict(list)
    for group, stratum in sorted(groups.items()):
        by_stratum[stratum].append(group)
    sets: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    carry = {"val": 0.0, "test": 0.0}
    for stratum in sorted(by_stratum):
        members = list(by_stratum[stratum])
        rng.shuffle(members)
        take = {}
        for name, fraction in (("test", test_fraction), ("val", val_fraction)):
            # Carry rounding remainders across strata so small strata do not all round to zero.
            exact = len(members) * fraction + carry[name]
            take[name] = int(np.floor(exact + 0.5))
            carry[name] = exact - take[name]
        if take["test"] + take["val"] >= len(members):
            take["test"], take["val"] = min(take["test"], len(members) - 1), 0
        sets["test"] += members[: take["test"]]
        sets["val"] += members[take["test"]: take["test"] + take["val"]]
        sets["train"] += members[take["test"] + take["val"]:]
    for name in fill:  # tiny datasets: never leave a set empty if train can spare one
        if not sets[name] and len(sets["train"]) > 1:
            sets[name].append(sets["train"].pop())
    return sets


def kfold_groups(groups: dict[str, str], k: int, seed: int) -> list[list[str]]:
    """k folds of groups, stratified: each stratum's groups are shuffled and dealt out in turn."""
    rng = np.random.default_rng(seed)
    folds: list[list[str]] = [[] for _ in range(k)]
    turn = 0  # carried across strata so that small strata do not all start at fold 0
    by_stratum: dict[str, list[str]] = defaultdict(list)
    for group, stratum in sorted(groups.items()):
        by_stratum[stratum].append(group)
    for stratum in sorted(by_stratum):
        members = list(by_stratum[stratum])
        rng.shuffle(members)
        for group in members:
            folds[turn % k].append(group)
            turn += 1
    return folds


def run(ds: DatasetConfig) -> None:
    paths = DatasetPaths(ds.results_dir)
    params = ds.cfg["split"]
    with StoreReader(paths.ingested) as store:
        keys = ds.task.stratum_keys(store) if params["stratify"] else {i: "all" for i in store.ids}
        attrs = {i: store.sample_attrs(i) for i in store.ids}
    group_of = {i: str(a.get("group", i)) for i, a in attrs.items()}
    # a layout's own split (an archive's arrays, nnU-Net's imagesTs); a group takes its first sample's set
    subset_of_group: dict[str, str] = {}
    for sample_id, a in attrs.items():
        if a.get("subset"):
            subset_of_group.setdefault(group_of[sample_id], str(a["subset"]))
    frequency = Counter(keys.values())
    group_stratum: dict[str, str] = {}
    for sample_id, group in group_of.items():
        # A group takes the rarest key among its samples, so rare cases spread over the sets.
        current = group_stratum.get(group, keys[sample_id])
        group_stratum[group] = min(current, keys[sample_id], key=lambda key: (frequency[key], key))
    seed = derive_seed(ds.seed, ds.name, "split")
    free = {g: s for g, s in group_stratum.items() if g not in subset_of_group}
    group_sets = split_groups(free, params["val_fraction"], params["test_fraction"], seed)
    if subset_of_group:
        # the sets the source gives are kept exactly; one it does not give is drawn from its train set
        # (nnU-Net gives imagesTr and imagesTs: val comes out of imagesTr)
        given = {name: sorted(g for g, s in subset_of_group.items() if s == name) for name in ("train", "val", "test")}
        missing = tuple(name for name in ("val", "test") if not given[name])
        drawn = split_groups({g: group_stratum[g] for g in given["train"]},
                             0.0 if given["val"] else params["val_fraction"],
                             0.0 if given["test"] else params["test_fraction"], derive_seed(seed, "given"), missing)
        for name in ("train", "val", "test"):
            group_sets[name] += given[name] + drawn[name]
    extra = {}
    if params["k_folds"]:
        # Cross-validation: the test set stays aside; train + val are re-dealt into k folds. Fold
        # `fold` (fold 0 where all folds train) is train/val here; each fold's training takes its own.
        pool = {g: s for g, s in group_stratum.items() if g not in set(group_sets["test"])}
        if len(pool) < params["k_folds"]:
            raise ConfigError(f"{ds.path}: key split.k_folds: {params['k_folds']} folds need at least as many groups "
                              f"(subjects) outside the test set, and there are {len(pool)}; lower k_folds")
        folds = kfold_groups(pool, params["k_folds"], derive_seed(seed, "folds"))
        shown = params["fold"] or 0
        group_sets["val"] = folds[shown]
        group_sets["train"] = [g for i, fold in enumerate(folds) if i != shown for g in fold]
        extra = {"k_folds": params["k_folds"], "fold": params["fold"],
                 "folds": [sorted(i for i, g in group_of.items() if g in set(fold)) for fold in folds]}
    set_of_group = {g: name for name, groups in group_sets.items() for g in groups}
    split = {name: sorted(i for i, g in group_of.items() if set_of_group[g] == name) for name in group_sets}
    counts = {name: dict(sorted(Counter(keys[i] for i in ids).items())) for name, ids in split.items()}
    atomic_write_json(paths.split, {"seed": seed, "stratified_by": ds.task.stratified_by if params["stratify"] else "none", "strata": counts, **split, **extra})
    log.info("split %s: train %d, val %d, test %d", ds.name, *(len(split[k]) for k in ("train", "val", "test")))


def fold_split(split: dict, fold: int) -> dict:
    """split.json as fold `fold` of its cross-validation sees it: that fold is val, the others train."""
    if "folds" not in split or not 0 <= fold < len(split["folds"]):
        raise ConfigError(f"split.json has no fold {fold} (it holds {len(split.get('folds', []))} folds); "
                          "rerun `sciconv split` after setting split.k_folds")
    return split | {"val": list(split["folds"][fold]),
                    "train": sorted(i for f, ids in enumerate(split["folds"]) if f != fold for i in ids)}
