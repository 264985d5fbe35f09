# lapr: state reduction in linear-attention LMs. `snakemake --cores all` reproduces the embedded
# profile; `--configfile workflow/config/<profile>.yaml` (or `--profile workflow/profiles/<p>`)
# picks another. Every stage lives in workflow/rules/<stage>.smk and calls `python -m lapr <stage>`;
# common.smk (first) holds everything they share, and they read nothing from one another.
# A --configfile (or a profile's) is the whole config; only a run that names none gets the embedded
# default. Several files merge in order (`--configfile workflow/config/embedded.yaml mine.yaml`:
# mine.yaml overlays embedded), as does `--config key=value` over either.
if not workflow.overwrite_configfiles:
    configfile: "workflow/config/embedded.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/tokens.smk"
include: "workflow/rules/pretrain.smk"
include: "workflow/rules/profile.smk"
include: "workflow/rules/prune.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/heads.smk"
include: "workflow/rules/mqar.smk"
include: "workflow/rules/bench.smk"
include: "workflow/rules/figures.smk"


rule all:
    default_target: True
    input:
        [target for stage in TARGETS.values() for target in stage],


onsuccess:
    # the models' held-out perplexity against the unigram baseline, the last thing a run shows
    from lapr.report.summary import model_lines

    print("\n".join(model_lines(R)))
