# summary across datasets


rule summary:
    input:
        metrics=expand(f"{RESULTS}/{{dataset}}/metrics.json", dataset=list(DATASETS)),
        saliency=expand(f"{RESULTS}/{{dataset}}/saliency", dataset=list(DATASETS)),
    output:
        md=f"{RESULTS}/summary.md",
        html=report(f"{RESULTS}/summary.html", caption="../report/summary.rst", category="summary"),
    params:
        global_config=GLOBAL_CONFIG,
    benchmark:
        f"{RESULTS}/benchmarks/summary/all.tsv",
    log:
        "logs/summary/all.log",
    threads: 1
    conda:
        ENV
    shell:
        "sciconv summary --config {params.global_config} > {log} 2>&1"
