# plan -> train -> evaluate -> explain


rule plan:
    input:
        ingested=f"{RESULTS}/{{dataset}}/ingested.h5",
        split=f"{RESULTS}/{{dataset}}/split.json",
        preprocessed=f"{RESULTS}/{{dataset}}/preprocessed.h5",
    output:
        fingerprint=f"{RESULTS}/{{dataset}}/fingerprint.json",
        plan=f"{RESULTS}/{{dataset}}/plan.json",
    params:
        dataset=dataset_yaml,
        global_config=GLOBAL_CONFIG,
        settings=step_settings("plan"),
    benchmark:
        f"{RESULTS}/benchmarks/plan/{{dataset}}.tsv"
    log:
        "logs/plan/{dataset}.log",
    # it times training steps: on the device and with the threads training will have
    threads: TRAIN_THREADS
    resources:
        gpu=1 if TRAIN_ON_GPU else 0,
    conda:
        ENV
    shell:
        "sciconv plan {params.dataset} --config {params.global_config} --threads {threads} > {log} 2>&1"


rule train:
    input:
        preprocessed=f"{RESULTS}/{{dataset}}/preprocessed.h5",
        split=f"{RESULTS}/{{dataset}}/split.json",
        fingerprint=f"{RESULTS}/{{dataset}}/fingerprint.json",
        plan=f"{RESULTS}/{{dataset}}/plan.json",
    output:
        # last.pt beside it is the resumable checkpoint: not an output, so Snakemake
        # keeps it when a job fails and the rerun resumes from it.
        model=f"{RESULTS}/{{dataset}}/model/model.pt",
        run=f"{RESULTS}/{{dataset}}/model/run.json",
        augmented=f"{RESULTS}/{{dataset}}/model/augmented_samples.png",
    params:
        dataset=dataset_yaml,
        global_config=GLOBAL_CONFIG,
        settings=step_settings("train"),
    benchmark:
        f"{RESULTS}/benchmarks/train/{{dataset}}.tsv"
    log:
        "logs/train/{dataset}.log",
    threads: TRAIN_THREADS
    resources:
        gpu=train_gpus,
    conda:
        ENV
    shell:
        "sciconv train {params.dataset} --config {params.global_config} --threads {threads} > {log} 2>&1"


rule train_fold:
    # one cross-validation fold (split.k_folds without split.fold): the folds train side by side
    input:
        preprocessed=f"{RESULTS}/{{dataset}}/preprocessed.h5",
        split=f"{RESULTS}/{{dataset}}/split.json",
        fingerprint=f"{RESULTS}/{{dataset}}/fingerprint.json",
        plan=f"{RESULTS}/{{dataset}}/plan.json",
    output:
        model=f"{RESULTS}/{{dataset}}/folds/fold_{{fold}}/model/model.pt",
        run=f"{RESULTS}/{{dataset}}/folds/fold_{{fold}}/model/run.json",
        augmented=f"{RESULTS}/{{dataset}}/folds/fold_{{fold}}/model/augmented_samples.png",
    params:
        dataset=dataset_yaml,
        global_config=GLOBAL_CONFIG,
        settings=step_settings("train"),
    benchmark:
        f"{RESULTS}/benchmarks/train/{{dataset}}_fold{{fold}}.tsv"
    log:
        "logs/train/{dataset}_fold{fold}.log",
    threads: TRAIN_THREADS
    resources:
        gpu=train_gpus,
    conda:
        ENV
    shell:
        "sciconv train {params.dataset} --config {params.global_config} --threads {threads} --fold {wildcards.fold}"
        " > {log} 2>&1"


rule evaluate:
    input:
        model=trained_models,
        preprocessed=f"{RESULTS}/{{dataset}}/preprocessed.h5",
        split=f"{RESULTS}/{{dataset}}/split.json",
    output:
        metrics=report(f"{RESULTS}/{{dataset}}/metrics.json", caption="../report/metrics.rst",
                       category="{dataset}", subcategory="metrics"),
        per_sample=f"{RESULTS}/{{dataset}}/per_sample_metrics.json",
        per_sample_table=f"{RESULTS}/{{dataset}}/per_sample_metrics.csv",
        plots=report(directory(f"{RESULTS}/{{dataset}}/plots"), patterns=["{name}.png"],
                     caption="../report/plots.rst", category="{dataset}", subcategory="plots"),
        predicted_masks=directory(f"{RESULTS}/{{dataset}}/predicted_masks"),
    params:
        dataset=dataset_yaml,
        global_config=GLOBAL_CONFIG,
        settings=step_settings("evaluate"),
    benchmark:
        f"{RESULTS}/benchmarks/evaluate/{{dataset}}.tsv"
    log:
        "logs/evaluate/{dataset}.log",
    threads: 1
    resources:
        gpu=1 if TRAIN_ON_GPU else 0,
    conda:
        ENV
    shell:
        "sciconv evaluate {params.dataset} --config {params.global_config} --threads {threads} > {log} 2>&1"


rule explain:
    input:
        model=trained_models,
        preprocessed=f"{RESULTS}/{{dataset}}/preprocessed.h5",
        split=f"{RESULTS}/{{dataset}}/split.json",
        # after evaluate: both write to the same MLflow run, one at a time
        metrics=f"{RESULTS}/{{dataset}}/metrics.json",
    output:
        saliency=report(directory(f"{RESULTS}/{{dataset}}/saliency"), patterns=["{name}.png"],
                        caption="../report/saliency.rst", category="{dataset}", subcategory="saliency"),
        network=directory(f"{RESULTS}/{{dataset}}/network"),
    params:
        dataset=dataset_yaml,
        global_config=GLOBAL_CONFIG,
        settings=step_settings("explain"),
    benchmark:
        f"{RESULTS}/benchmarks/explain/{{dataset}}.tsv"
    log:
        "logs/explain/{dataset}.log",
    threads: 1
    resources:
        gpu=1 if TRAIN_ON_GPU else 0,
    conda:
        ENV
    shell:
        "sciconv explain {params.dataset} --config {params.global_config} > {log} 2>&1"
