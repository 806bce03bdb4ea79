# simulate -> ingest -> split -> preprocess


rule simulate:
    input:
        config=dataset_yaml,
    output:
        manifest=f"{RESULTS}/{{dataset}}/raw/manifest.csv",
    params:
        global_config=GLOBAL_CONFIG,
    benchmark:
        f"{RESULTS}/benchmarks/simulate/{{dataset}}.tsv",
    log:
        "logs/simulate/{dataset}.log",
    threads: 1
    conda:
        ENV
    shell:
        "sciconv simulate {input.config} --config {params.global_config} > {log} 2>&1"


rule ingest:
    input:
        config=dataset_yaml,
        raw=raw_input,
    output:
        f"{RESULTS}/{{dataset}}/ingested.h5",
    params:
        global_config=GLOBAL_CONFIG,
    benchmark:
        f"{RESULTS}/benchmarks/ingest/{{dataset}}.tsv",
    log:
        "logs/ingest/{dataset}.log",
    threads: 1
    conda:
        ENV
    shell:
        "sciconv ingest {input.config} --config {params.global_config} > {log} 2>&1"


rule split:
    input:
        config=dataset_yaml,
        ingested=f"{RESULTS}/{{dataset}}/ingested.h5",
    output:
        f"{RESULTS}/{{dataset}}/split.json",
    params:
        global_config=GLOBAL_CONFIG,
    benchmark:
        f"{RESULTS}/benchmarks/split/{{dataset}}.tsv",
    log:
        "logs/split/{dataset}.log",
    threads: 1
    conda:
        ENV
    shell:
        "sciconv split {input.config} --config {params.global_config} > {log} 2>&1"


rule preprocess:
    input:
        config=dataset_yaml,
        ingested=f"{RESULTS}/{{dataset}}/ingested.h5",
        split=f"{RESULTS}/{{dataset}}/split.json",
    output:
        f"{RESULTS}/{{dataset}}/preprocessed.h5",
    params:
        global_config=GLOBAL_CONFIG,
    benchmark:
        f"{RESULTS}/benchmarks/preprocess/{{dataset}}.tsv",
    log:
        "logs/preprocess/{dataset}.log",
    threads: 1
    conda:
        ENV
    shell:
        "sciconv preprocess {input.config} --config {params.global_config} > {log} 2>&1"
