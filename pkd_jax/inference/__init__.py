"""Running trained networks on new videos (`Predictor`, `predict_files`) and exporting them (`export`).

A network comes from a training workdir through `load_trained` (`pkd_jax.workdir.trained`, the one reader
of workdirs). The command lines are `python -m pkd_jax.predict` and `python -m pkd_jax.export`.
"""

from pkd_jax.inference.frames import (
    AudioWindows,
    PredictError,
    check_audio_length,
    check_video_file,
    face_chunks,
)
from pkd_jax.inference.outputs import (
    absent_spans,
    output_names,
    plan_outputs,
    plot,
    predict_files,
    summary_table,
    write_csv,
)
from pkd_jax.inference.predictor import Predictor, VideoPrediction
from pkd_jax.inference.settings import FACE_FIELDS, make_cropper, preprocess_settings
from pkd_jax.workdir.config_record import read_config
from pkd_jax.workdir.trained import Trained, load_trained

__all__ = [
    "FACE_FIELDS",
    "AudioWindows",
    "PredictError",
    "Predictor",
    "Trained",
    "VideoPrediction",
    "absent_spans",
    "check_audio_length",
    "check_video_file",
    "face_chunks",
    "load_trained",
    "make_cropper",
    "output_names",
    "plan_outputs",
    "plot",
    "predict_files",
    "preprocess_settings",
    "read_config",
    "summary_table",
    "write_csv",
]
