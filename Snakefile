# sciconv workflow: raw scientific images -> trained, explained, MLflow-tracked CNN.
# Run:  snakemake --cores 2      (every dataset listed in config/config.yaml)
# Logic lives in the sciconv package; each rule calls one `sciconv <step>`.
from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config/config.yaml"


validate(config, "workflow/schemas/config.schema.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/model.smk"
include: "workflow/rules/report.smk"


onstart:
    # Create the MLflow store once, before parallel jobs could race on its schema migration.
    ensure_tracking_store()


rule all:
    input:
        final_outputs(),
    default_target: True
