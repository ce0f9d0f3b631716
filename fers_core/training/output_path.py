"""Where fers:train saves a model when the user names no file: a real file, never a temporary one.

A temporary model is lost when QGIS closes, and so is the resume checkpoint beside it. The
default is `<first input stem>_fers_model.pt` beside the first input, or in a fallback folder
(the QGIS profile's fers/models) when the input's folder is not writable.
"""

import os

MODEL_SUFFIX = "_fers_model"


def default_model_output(first_input, fallback_folder):
    """The default model path for a training on `first_input`.

    The first of `<stem>_fers_model.pt`, `<stem>_fers_model_2.pt`, ... with no model file yet:
    a finished model is never replaced, and an interrupted run's checkpoint
    (`<model>.resume.pt`, left while the model file does not exist) is found again by the
    next run with the defaults. The fallback folder is created when it is used.
    """
    stem = os.path.splitext(os.path.basename(str(first_input)))[0] or "fers"
    folder = os.path.dirname(os.path.abspath(str(first_input)))
    if not os.access(folder, os.W_OK):
        folder = str(fallback_folder)
        os.makedirs(folder, exist_ok=True)
    number = 1
    while True:
        name = f"{stem}{MODEL_SUFFIX}{'' if number == 1 else f'_{number}'}.pt"
        path = os.path.join(folder, name)
        if not os.path.exists(path):
            return path
        number += 1
