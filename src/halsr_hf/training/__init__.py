"""Training of HALSR-Net and the LV ROI regressor with ``transformers.Trainer``.

* :mod:`.train` — ``halsr-hf train`` / ``scripts/train.py`` (HALSR-Net or the U-Net baseline);
* :mod:`.train_roi` — ``halsr-hf train-roi`` / ``scripts/train_roi.py``;
* :mod:`.data` — slice sources (``datasets`` split or arrays file) and the torch datasets that crop
  and augment with the image processor's own functions;
* :mod:`.augment` — on-the-fly augmentation (dihedral group, rotation, scaling, elastic, intensity).

Submodules are imported lazily (``halsr_hf`` does not import this package).
"""
