"""The dataset pipeline (Qt-free, torch-free).

* :mod:`patina.core.dataset.images`   which files are images, a full-decode check, loading as 8-bit RGB
* :mod:`patina.core.dataset.captions` caption sidecars (lossless read/write) and kohya caption processing
* :mod:`patina.core.dataset.caption_edits` tag/prefix/find-replace edits and undoable caption change sets
* :mod:`patina.core.dataset.listing`  the concept folders and images of a dataset, by name (for browsing)
* :mod:`patina.core.dataset.buckets`  aspect-ratio buckets and resize-and-crop
* :mod:`patina.core.dataset.folders`  reading the kohya ``<repeats>_<name>`` folder layout
* :mod:`patina.core.dataset.wizard`   building that layout from a plain folder of images
* :mod:`patina.core.dataset.summary`  samples, steps, buckets and problems for a run, as data and text
* :mod:`patina.core.cli.dataset` ``patina dataset check|prepare``
"""
