"""kepler_trainer: train, evaluate, publish, estimate and serve Kepler power models.

The public face is the `kepler-model` command (`kepler_trainer.cli`). Inside, data flows one way:
query result (`data`) -> feature tables (`extract`) -> idle-power isolation (`isolate`) ->
trainers (`trainers`) -> evaluation (`evaluate`) -> pipeline folder (`pipeline`).
"""

__version__ = "0.1.0"
