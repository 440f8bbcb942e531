"""The DALI augmentation backend (optional: ``pip install 'crisscross-av[dali]'``).

- :mod:`~crisscross.data.dali.inputs`: the one converter from the shared parameters
  (:mod:`crisscross.data.params`) to the graph's named inputs (no DALI needed to import it);
- :mod:`~crisscross.data.dali.graph`: the pipeline graph (decode, augment, log-mel), one
  definition for the GPU and for DALI's CPU operators;
- :mod:`~crisscross.data.dali.feeder`: :class:`~crisscross.data.dali.feeder.DaliAugmenter`, the
  graph fed through ``external_source`` (``make_train_loader(backend="dali")``);
- :mod:`~crisscross.data.dali.reader`: :class:`~crisscross.data.dali.reader.DaliShardLoader`, the
  graph fed by DALI's own ``readers.webdataset``.

Nothing is imported here, so that the converter loads without nvidia-dali. docs/dali.md says
which feeding path to use when.
"""
