"""proselab: text generation from RNNs to GPT — train, generate, evaluate.

    import proselab
    result = proselab.train("shakespeare-char-gpt", {"train.max_iters": 500})
    gen = proselab.load(result.run_dir)
    print(gen.generate("ROMEO:", max_new_tokens=200))
    print(proselab.evaluate(result.run_dir, "my_text.txt"))
    # seq2seq runs: proselab.evaluate_pairs(run, "test.tsv"); classifiers: proselab.evaluate_labels(run, "test.csv")
"""

__version__ = "0.1.0"


def __getattr__(name):  # lazy: `import proselab` stays fast and torch loads on first use
    if name == "train":
        from .training import train

        return train
    if name in ("load", "Generator"):
        from . import api

        return getattr(api, name)
    if name in ("evaluate", "evaluate_pairs", "evaluate_labels"):
        from . import evaluation

        return getattr(evaluation, name)
    if name in ("generate", "stream"):
        from . import decoding

        return getattr(decoding, name)
    if name in ("Config", "load_config", "GenerationConfig", "ModelConfig", "DataConfig", "TrainConfig"):
        from . import config

        return getattr(config, name)
    raise AttributeError(f"module 'proselab' has no attribute '{name}'")


__all__ = ["train", "load", "evaluate", "evaluate_pairs", "evaluate_labels", "generate", "stream", "Generator",
           "Config", "load_config", "GenerationConfig", "ModelConfig", "DataConfig", "TrainConfig"]
