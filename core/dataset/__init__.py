"""The dataset pipeline (Qt-free, torch-free).

* :mod:`core.dataset.images`   which files are images, a full-decode check, loading as 8-bit RGB
* :mod:`core.dataset.captions` caption sidecars (lossless read/write) and kohya caption processing
* :mod:`core.dataset.buckets`  aspect-ratio buckets and resize-and-crop
* :mod:`core.dataset.folders`  reading the kohya ``<repeats>_<name>`` folder layout
* :mod:`core.dataset.wizard`   building that layout from a plain folder of images
* :mod:`core.dataset.summary`  samples, steps, buckets and problems for a run, as data and text
* :mod:`core.dataset.commands` ``patina dataset check|prepare``
"""
