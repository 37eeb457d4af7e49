"""What the trainer, the model server and the operator agree on, in one place with no third-party dependency.

* `exits`: the exit-code table (code, reason, retryable);
* `vocabulary`: feature groups, trainers, isolators, extractors, energy sources, output types, splits,
  tunings, and the rules of a pipeline name;
* `summary`: the JSON run summary the trainer writes to its termination log and the operator reads.

The trainer image and the operator image both install this package (see docs/contracts.md).
"""
