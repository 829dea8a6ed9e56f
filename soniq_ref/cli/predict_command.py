"""``soniq predict MODEL IMAGE...``: the class of each image file, with probabilities."""

from __future__ import annotations

import json

import numpy as np


def run_predict(args) -> None:
    """One line (or JSON object) per image: the likeliest classes and their probabilities."""
    from ..fileformat import load
    from ..images import load_image
    from ..train.metadata import read_metadata

    model = load(args.model_file)
    names = read_metadata(model).class_names
    x = np.stack([load_image(path, model.input_shape) for path in args.images])
    probabilities = model.predict_proba(x, backend=args.backend)
    for path, p in zip(args.images, probabilities):
        order = np.argsort(-p, kind="stable")
        if args.json:
            print(json.dumps({"image": path, "class": names[order[0]], "index": int(order[0]),
                              "probabilities": {n: float(v) for n, v in zip(names, p)}}))
        else:
            top = ", ".join(f"{names[i]} {p[i]:.1%}" for i in order[1:args.top])
            print(f"{path}: {names[order[0]]} ({p[order[0]]:.1%})"
                  + (f"; next: {top}" if top else ""))
