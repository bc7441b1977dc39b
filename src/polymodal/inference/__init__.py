from .predictor import Prediction, Predictor, resolve_model_dir

__all__ = ["Prediction", "Predictor", "resolve_model_dir"]
