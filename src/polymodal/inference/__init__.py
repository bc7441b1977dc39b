from .batch import predict_manifest
from .predictor import Prediction, Predictor, apply_processor_overrides, load_model, resolve_model_dir
from .zeroshot import PredictionError

__all__ = ["Prediction", "PredictionError", "Predictor", "apply_processor_overrides", "load_model",
           "predict_manifest", "resolve_model_dir"]
