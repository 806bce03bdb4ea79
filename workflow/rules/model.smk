# train -> evaluate -> explain


rule train:
    input:
        config=dataset_yaml,
        preprocessed=f"{RESULTS}/{{dataset}}/preprocessed.h5",
        split=f"{RESULTS}/{{dataset}}/split.json",
    output:
        # last.pt beside it is the resumable checkpoint: not an output, so Snakemake
        # keeps it when a job fails and the rerun resumes from it.
        model=f"{RESULTS}/{{dataset}}/model/model.pt",
        run=f"{RESULTS}/{{dataset}}/model/run.json",
    params:
        global_config=GLOBAL_CONFIG,
    benchmark:
        f"{RESULTS}/benchmarks/train/{{dataset}}.tsv",
    log:
        "logs/train/{dataset}.log",
    threads: TRAIN_THREADS
    resources:
        gpu=train_gpus,
    conda:
        ENV
    shell:
        "sciconv train {input.config} --config {params.global_config} --threads {threads} > {log} 2>&1"


rule evaluate:
    input:
        config=dataset_yaml,
        model=f"{RESULTS}/{{dataset}}/model/model.pt",
        preprocessed=f"{RESULTS}/{{dataset}}/preprocessed.h5",
        split=f"{RESULTS}/{{dataset}}/split.json",
    output:
        metrics=report(f"{RESULTS}/{{dataset}}/metrics.json", caption="../report/metrics.rst",
                       category="{dataset}", subcategory="metrics"),
        plots=report(directory(f"{RESULTS}/{{dataset}}/plots"), patterns=["{name}.png"],
                     caption="../report/plots.rst", category="{dataset}", subcategory="plots"),
    params:
        global_config=GLOBAL_CONFIG,
    benchmark:
        f"{RESULTS}/benchmarks/evaluate/{{dataset}}.tsv",
    log:
        "logs/evaluate/{dataset}.log",
    threads: 1
    resources:
        gpu=1 if TRAIN_ON_GPU else 0,
    conda:
        ENV
    shell:
        "sciconv evaluate {input.config} --config {params.global_config} --threads {threads} > {log} 2>&1"


rule explain:
    input:
        config=dataset_yaml,
        model=f"{RESULTS}/{{dataset}}/model/model.pt",
        preprocessed=f"{RESULTS}/{{dataset}}/preprocessed.h5",
        split=f"{RESULTS}/{{dataset}}/split.json",
        # after evaluate: both write to the same MLflow run, one at a time
        metrics=f"{RESULTS}/{{dataset}}/metrics.json",
    output:
        report(directory(f"{RESULTS}/{{dataset}}/saliency"), patterns=["{name}.png"],
               caption="../report/saliency.rst", category="{dataset}", subcategory="saliency"),
    params:
        global_config=GLOBAL_CONFIG,
    benchmark:
        f"{RESULTS}/benchmarks/explain/{{dataset}}.tsv",
    log:
        "logs/explain/{dataset}.log",
    threads: 1
    resources:
        gpu=1 if TRAIN_ON_GPU else 0,
    conda:
        ENV
    shell:
        "sciconv explain {input.config} --config {params.global_config} > {log} 2>&1"
