"""What the trainer, the model server and the operator agree on, in one place with no third-party dependency.

* `exits`: the exit-code table (code, reason, retryable);
* `vocabulary`: feature groups, trainers, isolators, extractors, energy sources, output types, splits,
  tunings, feature-set presets, and the rules of a pipeline name;
* `summary`: the JSON run summary the trainer writes to its termination log and the operator reads;
* `layout`: the names of the files and folders of a published pipeline and of an estimation;
* `invocation`: a `train` or `estimate` run as typed settings, and the one writer of its command line
  (whose flag names the trainer's parser declares too);
* `machine`: the machine spec, its one processor normaliser (Kepler 0.7.12's) and one similarity, so the
  trainer's node-type index and the model server's selection name a machine alike.

The trainer, model-server and operator images all install this package (see docs/contracts.md).
"""
