# simulate -> ingest -> split -> preprocess
# Each rule's params.settings holds the settings its step reads (sciconv.settings): an edit reruns a
# step when it changes them, and the dataset YAML itself is no rule's input.


rule simulate:
    output:
        raw=directory(f"{RESULTS}/{{dataset}}/raw"),
    params:
        dataset=dataset_yaml,
        global_config=GLOBAL_CONFIG,
        settings=step_settings("simulate"),
    benchmark:
        f"{RESULTS}/benchmarks/simulate/{{dataset}}.tsv"
    log:
        "logs/simulate/{dataset}.log",
    threads: 1
    conda:
        ENV
    shell:
        "sciconv simulate {params.dataset} --config {params.global_config} > {log} 2>&1"


rule ingest:
    input:
        raw=raw_input,
    output:
        ingested=f"{RESULTS}/{{dataset}}/ingested.h5",
        rejected=f"{RESULTS}/{{dataset}}/rejected.csv",
    params:
        dataset=dataset_yaml,
        global_config=GLOBAL_CONFIG,
        settings=step_settings("ingest"),
    benchmark:
        f"{RESULTS}/benchmarks/ingest/{{dataset}}.tsv"
    log:
        "logs/ingest/{dataset}.log",
    threads: 1
    conda:
        ENV
    shell:
        "sciconv ingest {params.dataset} --config {params.global_config} > {log} 2>&1"


rule split:
    input:
        ingested=f"{RESULTS}/{{dataset}}/ingested.h5",
    output:
        f"{RESULTS}/{{dataset}}/split.json",
    params:
        dataset=dataset_yaml,
        global_config=GLOBAL_CONFIG,
        settings=step_settings("split"),
    benchmark:
        f"{RESULTS}/benchmarks/split/{{dataset}}.tsv"
    log:
        "logs/split/{dataset}.log",
    threads: 1
    conda:
        ENV
    shell:
        "sciconv split {params.dataset} --config {params.global_config} > {log} 2>&1"


rule preprocess:
    input:
        ingested=f"{RESULTS}/{{dataset}}/ingested.h5",
    output:
        f"{RESULTS}/{{dataset}}/preprocessed.h5",
    params:
        dataset=dataset_yaml,
        global_config=GLOBAL_CONFIG,
        settings=step_settings("preprocess"),
    benchmark:
        f"{RESULTS}/benchmarks/preprocess/{{dataset}}.tsv"
    log:
        "logs/preprocess/{dataset}.log",
    threads: 1
    conda:
        ENV
    shell:
        "sciconv preprocess {params.dataset} --config {params.global_config} > {log} 2>&1"
