"""WinoGrande partial evaluation on the llm-foundry form, equal to lm-eval 0.4.13's
preprocess_winogrande on the original {sentence, option1, option2, answer}:

    stock doc_to_text   -> {"1": 0, "2": 1}[answer]           == gold
    stock doc_to_choice -> [sentence[:blank] + option_i]       == context_options
    stock doc_to_target -> sentence[blank + 1:].strip()        == continuation
"""


def doc_to_text(doc):
    # An int tells lm-eval "multiple inputs": score the same continuation after each context.
    return int(doc["gold"])


def doc_to_target(doc):
    return doc["continuation"].strip()


def doc_to_choice(doc):
    return list(doc["context_options"])
