"""Evaluation protocols of the CrissCross paper (appendix E) on avshards-built downstream sets.

- :mod:`~crisscross.eval.features`: frozen backbones, clip sampling, max-pooled conv5 features, cache;
- :mod:`~crisscross.eval.svm`: linear SVM with the C sweep, clip scores averaged per video;
- :mod:`~crisscross.eval.retrieval`: cosine nearest-neighbour retrieval, R@k;
- :mod:`~crisscross.eval.protocols`: linear / fusion / retrieval runs over splits -> reports;
- :mod:`~crisscross.eval.finetune` and :mod:`~crisscross.eval.probe`: supervised training;
- :mod:`~crisscross.eval.report`: JSON + markdown table + confusion matrix;
- :mod:`~crisscross.eval.cli`: the ``crisscross eval`` command group.

Nothing is imported here, so that ``crisscross --help`` does not load scikit-learn.
"""
