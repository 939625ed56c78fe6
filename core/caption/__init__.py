"""Auto-captioning (Qt-free): a first draft of every caption, from a captioning model.

* :mod:`patina.core.caption.models`  the models Patina knows (BLIP, the WD14 taggers): hub repository, files, size
* :mod:`patina.core.caption.files`   finding a model's files (a model folder, Patina's offline folder, the Hugging
  Face cache) and downloading them, only when asked
* :mod:`patina.core.caption.blip`    BLIP sentences (transformers)
* :mod:`patina.core.caption.wd14`    WD14 booru tags (ONNX, onnxruntime)
* :mod:`patina.core.caption.run`     a captioning pass over a dataset folder: skip / overwrite / append, preview,
  cancellable, written as one undoable change set

Typical use::

    model = get_model("wd14")
    folder = model_files(model, model_dir=None, download_missing=True, progress=print)
    captioner = load_captioner(model, folder, TaggerOptions(general_threshold=0.4))
    report = caption_pass("img", captioner, mode="skip", prefix="sks")
"""
